// The tokenizer file formats lmlab reads (model/tokenizer/tokenizer.cpp, model/tokenizer/tokenizer_bpe.cpp), one fuzz
// target each: this file is compiled once per format with LMLAB_TOKENIZER_FORMAT =
//   0 llama2.c tokenizer.bin            (fuzz_tokenizer_llama2c)
//   1 encoder.json + vocab.bpe (OpenAI) (fuzz_tokenizer_gpt2_files)
//   2 Hugging Face tokenizer.json       (fuzz_tokenizer_json)
//   3 llm.c gpt2_tokenizer.bin          (fuzz_tokenizer_llmc; the magic is prepended so it is read as one)
//   4 vocab.json + merges.txt (HF GPT-2)(fuzz_tokenizer_vocab_merges)
// The input is the file, or Parts [first file][second file]. A tokenizer that loads must then encode
// and decode a fixed text, and decode every id, without anything but its own error.
#include "fuzz/fuzz.h"
#include "model/tokenizer/text_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace fs = std::filesystem;
    lmlab::fuzz::Parts parts(data, size);
    const fs::path dir = lmlab::fuzz::scratch_dir() / "tok";
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir);
    std::string path;
    switch (LMLAB_TOKENIZER_FORMAT) {
        case 0: path = lmlab::fuzz::write_file("tok/tokenizer.bin", parts.rest()); break;
        case 1:
            lmlab::fuzz::write_file("tok/encoder.json", parts.next());
            lmlab::fuzz::write_file("tok/vocab.bpe", parts.rest());
            path = dir.string();
            break;
        case 2: path = lmlab::fuzz::write_file("tok/tokenizer.json", parts.rest()); break;
        case 3: {
            const std::string_view body = parts.rest();  // the magic 20240328 first, so it is read as llm.c's
            path = lmlab::fuzz::write_file("tok/gpt2_tokenizer.bin", std::string("\x80\xf4\x34\x01", 4) + std::string(body));
            break;
        }
        default:
            lmlab::fuzz::write_file("tok/vocab.json", parts.next());
            lmlab::fuzz::write_file("tok/merges.txt", parts.rest());
            path = dir.string();
    }
    try {
        const lmlab::TextTokenizer tok = lmlab::load_tokenizer(path);
        std::vector<int> ids;
        try {
            ids = tok.encode("Hello, world! caf\xc3\xa9 <|endoftext|> 123", /*allow_special=*/true);
        } catch (const lmlab::ModelError&) {  // llm.c's file is decode-only
        }
        (void)tok.decode(ids);
        std::vector<int> all;
        for (int i = 0; i < tok.vocab_size() && i < 4096; ++i) all.push_back(i);
        (void)tok.decode(all);
        (void)tok.stop_ids();
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
