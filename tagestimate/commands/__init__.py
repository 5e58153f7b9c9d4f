"""The command lines: one module per script (tag = multiinference.py, train =
multitrain_efficientnet.py, crawl = newdataclawer.py, labels = labelmap.py); the top-level scripts
are shims over them. The top floor: commands may import any wing."""
