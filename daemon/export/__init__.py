"""Export a prepared worker as an OCI image (SPEC §14): upper-dir reader, layer, image."""
