"""Area, energy and latency estimation of an RNN on crossbars (see ``accounting`` for the model)."""
