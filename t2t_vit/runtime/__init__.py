"""The CPU runtime: backends behind one interface and the runner with ais_bench's command line, files and summary,
in parts (batching, outputs, input checks, timing, resume, several devices). Never imports ``job/``.
"""
