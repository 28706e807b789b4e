"""Tasks: character-level language model (:mod:`.lm`)."""
