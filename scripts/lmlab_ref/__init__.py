"""lmlab's references: the code that computes every golden fixture and `lmlab verify`'s reference run.

The thin command lines beside this package (scripts/export_golden.py, verify_ref.py,
golden_status.py, make_fuzz_corpus.py, make_random_hf.py) parse arguments and call it. The
package is the exporter: `lmlab exporter-sha256` hashes every *.py under scripts/lmlab_ref/, and
every fixture records that hash.

Importing the package imports nothing: lmlab_ref.lmlab (standard library only) can be used
without torch, which is what golden_status.py does on every build. The modules, from the bottom:

  lmlab        the lmlab binary's answers (stage table, family rows, exporter hash) and paths
  common       torch set-up, seeds and generators, the export context, ../shared file names,
               Reference: the interface of every family's models
  fixtures     HDF5 writing (files, cases, attributes, manifest) and the case formats the
               model, KV-cache and greedy stages read
  hooks        forward-hook capture of named intermediates
  llama_ref    our LLaMA, written from the paper, token by token (and the float64 truth of the
               transformers decoders: the same weights in llama_ref)
  hf_decoder   transformers' LLaMA-style decoders (LLaMA, Qwen2, the MoE models' attention)
  hf_moe       transformers' mixture-of-experts decoders (Qwen2-MoE, Mixtral) and MoeRef
  q8           llama2.c runq.c's int8 arithmetic, in torch
  tokenizers   SentencePiece and the King James Bible;  bpe: GPT-2's and Qwen's byte-level BPE
  families     one module per model family, FAMILIES keyed by the names of `lmlab list --json`
  kernels      the reference ops and their cases
  serve, quant the serving and int8-cost fixtures
  recipes      {recipe name: function}: how each stage row's fixture is made
  export       the exporter: stage rows -> recipes -> golden/, manifest.json
  verify       the reference side of `lmlab verify`
  selfcheck    the references checked against the ones we did not write (ctest refs.selfcheck)
"""
