"""Layer 4: the `ns` command line (typer). Parses, calls the pipeline, prints."""
