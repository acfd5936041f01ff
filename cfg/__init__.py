"""The method cfgs (and, in models/, the model YAMLs) that yolo-partial ships; installed as yolo_partial.assets.cfg."""
