"""Measuring recognition: open-set evaluation on folders (``evaluate``) and LFW-style
pair verification (``pairs``). Used by the CLI and the benchmarks, never by the daemon."""
