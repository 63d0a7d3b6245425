"""Step code run by the pipeline. Each step is a module with a CLI that reads only
its input folders and writes only its output folders (the Azure ML command
component contract). Nothing here imports triggers/ or pipeline/."""
