"""The data stages: corpus -> tokenizer -> token arrays -> languages (id tables, mixtures) -> the batch stream."""
