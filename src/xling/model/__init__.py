"""The model stage: the paper's GPT and its chunked output-head loss."""
