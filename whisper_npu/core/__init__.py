"""The leaf of the package: errors, files, the stage runner, seeds, languages. Imports nothing else of ours."""
