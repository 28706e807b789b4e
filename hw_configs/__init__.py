"""The shipped hardware-config presets (JSON package data: ``crossbar validate rram_nladc_5b`` and
every ``--config NAME`` find them with ``importlib.resources``) and their JSON Schema."""
