"""evolstm: LSTM policies for partially observable tasks.

Neuroevolution (EvoTorch's distribution-based searchers, ESP/CoSyNE, Evolino) and
recurrent policy gradients share one network definition (:mod:`evolstm.cells`),
one rollout engine (:mod:`evolstm.evaluation`) and one trainer loop
(:mod:`evolstm.trainer`).
"""

__version__ = "0.1.0"
