"""Optimisers. Each module holds agents that implement :class:`evolstm.agent.Agent`;
they are found through the ``evolstm.agents`` entry-point group (see ``pyproject.toml``)."""
