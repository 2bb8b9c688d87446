"""The report a person reads: report.md (plots as PNG files beside it) and a single-file report.html.

writer.py writes them (`write_report`); content.py decides what is said, plots.py draws, render.py renders;
formatting.py formats every number that a person reads (reports, summaries, the monitor).
"""
