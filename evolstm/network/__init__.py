"""The network: recurrent cells, observation encoders and action heads, the single and
population policies over one flat parameter layout, observation normalisation, and the
policy-gradient learner's actor-critic wrapper."""
