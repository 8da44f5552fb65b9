"""The algorithms: each turns the logits of one step into a loss and statistics, one file each
(base.py says what every one is; registry.py finds them; options.py reads their options without
loading torch, for the config and `fixmatch train --help`)."""
