"""Tools around the models: complexity (FLOPs), and later benchmarks, export, visualisation."""
