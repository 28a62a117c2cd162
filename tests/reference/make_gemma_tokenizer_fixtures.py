#!/usr/bin/env python3
"""Gemma 3's tokenizer fixtures from llama.cpp's tokenizer (llama-cpp-python, vocab_only), in
make_tokenizer_fixtures.py's formats: gemma3-sst2.jsonl, gemma3-gsm8k.jsonl, gemma3-edge.jsonl.
The GGUF's SentencePiece vocabulary (262,144 pieces, byte fallback, no space prefix) is the
tokenizer; its sha256 stands in the header's tokenizer_sha256. "decoded" is llama.cpp's
detokenization of the ids without control tokens.

Usage: make_gemma_tokenizer_fixtures.py SHARED_DIR GEMMA.gguf [OUT_DIR]
(SHARED_DIR holds datasets/; OUT_DIR defaults to tests/fixtures/tokenizer)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as mtf  # noqa: E402


class _Enc:
    def __init__(self, ids):
        self.ids = ids


class _Added:
    special = True


class LlamaCppTokenizer:
    """The slice of tokenizers.Tokenizer that make_tokenizer_fixtures uses, over llama.cpp."""

    def __init__(self, path):
        import llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.encode_special_tokens = False
        n = self.llm.n_vocab()
        # control tokens (llama_token_attr CONTROL = 1 << 3)
        self.control = {i for i in range(n) if llama_cpp.llama_vocab_get_attr(
            llama_cpp.llama_model_get_vocab(self.llm.model), i) & 8}

    def encode(self, text, add_special_tokens=True):
        return _Enc(self.llm.tokenize(text.encode("utf-8"), add_bos=bool(add_special_tokens),
                                      special=not self.encode_special_tokens))

    def get_added_tokens_decoder(self):
        return {i: _Added() for i in self.control}

    def decode(self, ids, skip_special_tokens=False):
        return self.llm.detokenize(ids).decode("utf-8", "replace")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    shared, gguf = sys.argv[1], sys.argv[2]
    out_dir = sys.argv[3] if len(sys.argv) > 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer")
    tok = LlamaCppTokenizer(gguf)
    import llama_cpp
    ref = f"llama-cpp-python {llama_cpp.__version__}"
    info = {"tokenizer": os.path.basename(gguf), "tokenizer_sha256": mtf.sha256(gguf), "reference": ref}
    for loader in (mtf.sst2_texts, mtf.gsm8k_texts):
        print(*mtf.write_dataset(out_dir, "gemma3", tok, None, shared, loader, info))
    path, n = mtf.write_edge(out_dir, "gemma3", tok)
    print(path, n)


if __name__ == "__main__":
    main()
