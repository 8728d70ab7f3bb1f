"""Post-training quantization methods: standard PTQ grids (:mod:`.standard`)."""
