"""Seed 000's example in its own words, on the built-in Wide&Deep (small
vocabularies, 5 x 1024 tower), level 0 and 1 on this machine's CPU.

    python benchmarks/seed_example.py [OUT_DIR]
"""

import os
import sys
import tempfile

import tiacc_inference
import tiacc_tf
from tiemb.bench import models

out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tiemb-seed-")
input_model = os.path.join(out, "wide_deep")
models.wide_deep(input_model, models.vocab_for("small"))
batch_size, slot_num, max_nnz = 512, 52, 26

for optimization_level in (0, 1):
    optimization_config = tiacc_tf.OptimizeConfig()
    optimization_config.parameter_map["tiemb/max_batch_size"].i = batch_size
    optimization_config.parameter_map["tiemb/slot_num"].i = slot_num
    optimization_config.parameter_map["tiemb/max_nnz"].i = max_nnz
    optimization_config.parameter_map["tiemb/cache_percentage"].f = 0.2
    optimization_config.parameter_map["tiemb/cpu_cache_percentage"].f = 1.0
    optimization_config.parameter_map["tiemb/hit_rate_threshold"].f = 0.95
    optimization_config.parameter_map["tiemb/enable_distributed"].b = False
    input_shapes = [{"range": ["1*26", "512*26"], "int": True}, {"range": ["1*13", "512*13"]}]   # cat, dense
    device_type = 1                                            # this machine has no GPU (0 would be an error)
    save_path = os.path.join(out, f"optimized_level{optimization_level}")
    output_model, optimized_report = tiacc_inference.optimize(
        input_model, optimization_level, device_type, input_shapes, None, None, None, save_path, optimization_config)
    print(f"optimized_report (level {optimization_level}):", optimized_report)
