"""Glue to fairseq2 and Ray: the extension entry point, container providers, fairseq2 internals, the Ray cluster."""
