"""Datasets: Penn Treebank characters (:mod:`.ptb`)."""
