"""Files in and out: the file boundary (`schema`), results files with their metadata
(`results`), the shipped real label tables (`real_labels`, `data/`) and input features
(`features`). Above `model` only."""
