"""The crawl wing: grows datasetpdm/ from NDL's API and IIIF manifests (newdataclawer.py)."""
