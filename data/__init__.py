"""The data YAMLs that yolo-partial ships; installed as yolo_partial.assets.data."""
