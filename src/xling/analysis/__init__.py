"""The analyses of trained runs: scaling laws and token efficiency, alignment, word2vec, transfer, speed."""
