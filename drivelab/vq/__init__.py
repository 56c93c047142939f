"""commaVQ world-model tokens: IO, lossless codecs (lzma, context mixing, GPT prior), GPT world model."""
