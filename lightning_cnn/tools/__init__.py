"""The tools beside fit/validate/test/predict: report, results, sweep and export, each a small command of its own."""
