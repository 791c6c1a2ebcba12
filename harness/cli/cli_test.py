#!/usr/bin/env python3
"""The lmlab command line as a user meets it: exit codes, messages and outputs of every command on
good and bad input (ctest -L cli). Standard library only; each case runs the real binary.

    python3 harness/cli/cli_test.py LMLAB GOLDEN_DIR SHARED_DIR WORK_DIR

Cases that need ../shared say SKIPPED when it is absent. The exit codes are documented in
`lmlab --help` (0 done, 1 a check failed, 2 the command could not do its work, 105-109 CLI11).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

LMLAB, GOLDEN, SHARED, WORK = sys.argv[1:5] if len(sys.argv) >= 5 else (None,) * 4
MODELS = os.path.join(GOLDEN or "", "models")
TINY_LLAMA = os.path.join(MODELS, "tiny-llama.h5")
TINY_GPT2 = os.path.join(MODELS, "tiny-gpt2")
TINY_QWEN2 = os.path.join(MODELS, "tiny-qwen2")
TINY_LLAMA3 = os.path.join(MODELS, "tiny-llama3")
STORIES = os.path.join(SHARED or "", "models", "stories260K", "stories260K.bin")
STORIES_GGUF = os.path.join(SHARED or "", "models", "stories260K", "stories260K.gguf")
STORIES_GGUF_Q8 = os.path.join(SHARED or "", "models", "stories260K", "stories260K-q8_0.gguf")
TINY_LLAMA_GGUF = os.path.join(MODELS, "gguf", "tiny-llama.q8_0.gguf")  # the tiny LLaMA, its vocabulary in the metadata
LLAMA2_TOK = os.path.join(SHARED or "", "tokenizers", "llama2", "tokenizer.bin")
GPT2_TOK = os.path.join(SHARED or "", "tokenizers", "gpt2")


def run(*args, stdin=None, stdout=subprocess.PIPE):
    """(exit code, stdout, stderr) of lmlab with these arguments."""
    p = subprocess.run([LMLAB, *map(str, args)], input=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    return p.returncode, p.stdout or "", p.stderr


def needs(*paths):
    missing = [p for p in paths if not os.path.exists(p)]
    return unittest.skipIf(missing, f"needs {', '.join(missing)} (../shared)")


class Tokenizers(unittest.TestCase):
    """A tokenizer that does not belong to the model is refused by name, with both numbers."""

    @needs(LLAMA2_TOK)
    def test_larger_vocabulary_is_refused(self):
        rc, out, err = run("generate", "--model", TINY_LLAMA, "--tokenizer", LLAMA2_TOK, "--prompt", "In the")
        self.assertEqual(rc, 2, err)
        self.assertIn("32000 ids", err)
        self.assertIn("16384 embedding rows", err)
        self.assertEqual(out, "")  # nothing printed before the refusal

    @needs(GPT2_TOK)
    def test_eos_outside_the_tokenizer_is_refused(self):
        rc, _, err = run("generate", "--model", TINY_QWEN2, "--tokenizer", GPT2_TOK, "--prompt", "hi")
        self.assertEqual(rc, 2, err)
        self.assertIn("151645", err)  # Qwen's eos
        self.assertIn("50257 ids", err)

    def test_padded_embedding_is_allowed_and_said(self):
        if not os.path.exists(os.path.join(TINY_QWEN2, "tokenizer.json")):
            self.skipTest("tiny-qwen2 has no tokenizer.json (../shared absent at export)")
        rc, _, err = run("generate", "--model", TINY_QWEN2, "--prompt", "hi", "--max-new-tokens", 2)
        self.assertEqual(rc, 0, err)
        self.assertIn("padding", err)
        self.assertIn("151936 embedding rows", err)
        # decode takes a padded row's id (it has no text) and refuses the first id past the rows
        rc, out, err = run("decode", "151935", "--model", TINY_QWEN2)
        self.assertEqual((rc, out), (0, "<id 151935>\n"), err)
        rc, out, err = run("decode", "151936", "--model", TINY_QWEN2)
        self.assertEqual((rc, out), (2, ""), err)
        self.assertIn("outside the vocabulary [0, 151936)", err)


class Spaces(unittest.TestCase):
    """One decoding rule: SentencePiece's leading space is dropped after BOS only; a continuation
    keeps the space before its first word; prompt + continuation joins (all three kinds)."""

    def test_prompt_ids_echo_keeps_spaces(self):
        rc, out, err = run("generate", "--prompt-ids", "1,1046,261,2074", "--max-new-tokens", 1)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("In the beginning"), out)

    def test_decode(self):
        rc, out, err = run("decode", "1,1046,261,2074")
        self.assertEqual((rc, out), (0, "In the beginning\n"), err)
        rc, out, _ = run("decode", "261,2074", "--context", "1,1046")
        self.assertEqual(out, " the beginning\n")  # a continuation keeps its first space
        rc, out, _ = run("decode", "261,2074")
        self.assertEqual(out, "the beginning\n")  # the start of a text drops it

    def test_decode_refuses_ids_outside_the_vocabulary(self):
        # printed as <id N> they would pass for a padded row's id: refused, naming the option and the position
        for args, said in (
                (("1,16384",), "ids: id 16384 (position 1, counting from 0) is outside the vocabulary [0, 16384)"),
                (("1", "--context", "5,-3"), "--context: id -3 (position 1, counting from 0)"),
                (("99999999999999999999",), "ids: '99999999999999999999' is outside the range of a token id")):
            with self.subTest(args=args):
                rc, out, err = run("decode", *args)
                self.assertEqual((rc, out), (2, ""), err)
                self.assertIn(said, err)
        rc, out, err = run("generate", "--prompt-ids", "1,-3", "--max-new-tokens", 1)  # as generate's prompt
        self.assertEqual((rc, out), (2, ""), err)
        self.assertIn("--prompt-ids: id -3 (position 1, counting from 0) is outside the vocabulary [0, 16384)", err)
        if os.path.exists(STORIES):  # a llama2.c model: its 512 rows
            rc, _, err = run("decode", "--model", STORIES, "1,600")
            self.assertEqual(rc, 2, err)
            self.assertIn("outside the vocabulary [0, 512)", err)

    def check_join(self, model, prompt):
        """serve-batch: each request's text continues its prompt: prompt + text == decode(all)."""
        d = tempfile.mkdtemp(dir=WORK)
        reqs = os.path.join(d, "requests.jsonl")
        with open(reqs, "w") as f:
            f.write(json.dumps({"id": "a", "prompt": prompt, "max_tokens": 6}) + "\n")
        out_path = os.path.join(d, "out.jsonl")
        rc, _, err = run("serve-batch", "--model", model, "--requests", reqs, "--out", out_path, "--quiet")
        self.assertEqual(rc, 0, err)
        with open(out_path) as f:
            r = json.loads(f.readline())
        rc, whole, _ = run("decode", ",".join(map(str, r["tokens"])), "--model", model, "--context",
                           ",".join(map(str, prompt_ids(model, prompt))))
        self.assertEqual(r["text"] + "\n", whole)
        if r["tokens"] and r["text"]:
            # the two decodes agree, and the first word keeps its space where the tokens carry one
            rc, alone, _ = run("decode", ",".join(map(str, r["tokens"])), "--model", model)
            self.assertTrue(r["text"].endswith(alone.rstrip("\n").lstrip(" ")))

    @needs(STORIES)
    def test_continuation_sentencepiece(self):
        self.check_join(STORIES, "Once upon a time")

    def test_continuation_byte_level(self):
        if not os.path.exists(os.path.join(TINY_GPT2, "tokenizer.json")):
            self.skipTest("tiny-gpt2 has no tokenizer.json (../shared absent at export)")
        self.check_join(TINY_GPT2, "Hello, my name is")

    def test_continuation_qwen(self):
        if not os.path.exists(os.path.join(TINY_QWEN2, "tokenizer.json")):
            self.skipTest("tiny-qwen2 has no tokenizer.json (../shared absent at export)")
        self.check_join(TINY_QWEN2, "The capital of France is")

    @needs(STORIES)
    def test_stories_prompt_echo(self):
        rc, out, err = run("generate", "--model", STORIES, "--prompt-ids", "1,403,407,261,378", "--max-new-tokens", 1)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("Once upon a time"), out)


def prompt_ids(model, text):
    rc, out, err = run("tokenize", "--model", model, "--bos", "-", stdin=text)
    assert rc == 0, err
    return json.loads(out)


class Outputs(unittest.TestCase):
    """Every output is checked: a write failure is an error naming the path, never exit 0."""

    def test_stdout_full(self):
        with open("/dev/full", "w") as full:
            rc, _, err = run("generate", "--prompt", "In the", "--max-new-tokens", 2, stdout=full)
        self.assertEqual(rc, 2)
        self.assertIn("standard output", err)

    def test_serve_batch_out_full(self):
        reqs = os.path.join(WORK, "one.jsonl")
        with open(reqs, "w") as f:
            f.write('{"prompt_ids": [1, 5], "max_tokens": 2}\n')
        rc, out, err = run("serve-batch", "--requests", reqs, "--out", "/dev/full", "--quiet")
        self.assertEqual(rc, 2, out)
        self.assertIn("/dev/full", err)
        self.assertNotIn("outputs: /dev/full", out)

    def test_trace_out_in_a_missing_folder_is_refused_first(self):
        missing = os.path.join(WORK, "no-such-folder")
        rc, _, err = run("trace", "--prompt", "In the", "--out", os.path.join(missing, "x.html"))
        self.assertEqual(rc, 2)
        self.assertIn("does not exist", err)
        self.assertFalse(os.path.exists(missing))  # never created silently

    def test_a_failed_trace_keeps_the_last_page(self):
        # the page is written beside its path and renamed over it at the end: a command that fails
        # (a wrong model, a bad id) leaves the previous page whole, and no stand-in behind
        page = os.path.join(WORK, "kept.html")
        rc, _, err = run("trace", "--prompt", "In the", "--max-new-tokens", 2, "--out", page)
        self.assertEqual(rc, 0, err)
        with open(page, "rb") as f:
            first = f.read()
        self.assertIn(b"<html", first[:200].lower())
        for args in (("--model", os.path.join(WORK, "no-such-model.h5"), "--prompt", "In the"), ("--prompt-ids", "1,99999")):
            with self.subTest(args=args):
                rc, _, err = run("trace", *args, "--out", page)
                self.assertEqual(rc, 2, err)
                with open(page, "rb") as f:
                    self.assertEqual(f.read(), first)
                self.assertFalse(os.path.exists(page + ".part"))

    def test_a_restricted_check_says_it_updated_the_previous_report(self):
        report = os.path.join(WORK, "merged-report")
        shutil.rmtree(report, ignore_errors=True)
        rc, out, err = run("check", "--stage", "kernel.*", "--report", report)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("updated in the previous report", out)  # a new report: nothing merged
        rc, out, err = run("check", "--stage", "kernel.add", "--report", report)
        self.assertEqual(rc, 0, err)
        self.assertIn("1 stage: 1 passed", out)
        self.assertRegex(out, r"the 1 stage run now, updated in the previous report, which holds \d+\)")
        shutil.rmtree(report)

    def test_except_is_said_when_it_takes_part(self):
        rc, out, err = run("check", "--stage", "kernel.softmax", "--except", "kernel.*", "--no-report")
        self.assertEqual(rc, 2, err)
        self.assertIn("no stage is left by --stage 'kernel.softmax' --except 'kernel.*'", err)
        rc, out, err = run("check", "--stage", "kernel.add", "--except", "kernal.*", "--no-report")
        self.assertEqual(rc, 0, err)
        self.assertIn("warning: --except 'kernal.*' matches no stage id", err)

    def test_check_report_on_a_file_fails_before_the_stages(self):
        f = os.path.join(WORK, "a-file")
        open(f, "w").close()
        rc, out, err = run("check", "--stage", "kernel.add", "--report", f)
        self.assertEqual(rc, 2)
        self.assertIn("a file, not a folder", err)
        self.assertNotIn("pass", out)  # no stage ran

    def test_a_refused_check_names_every_bad_file_and_the_folder(self):
        # a copy of the fixtures (links to them) with two fixtures damaged: check names the one its
        # stage reads, verify-fixtures both; the command given rewrites *this* folder (--out); a
        # refused check leaves no report folder behind
        golden = os.path.join(WORK, "golden-copy")
        shutil.rmtree(golden, ignore_errors=True)
        with open(os.path.join(GOLDEN, "manifest.json")) as f:
            listed = json.load(f)["files"]
        for rel in listed:
            os.makedirs(os.path.dirname(os.path.join(golden, rel)), exist_ok=True)
            os.symlink(os.path.abspath(os.path.join(GOLDEN, rel)), os.path.join(golden, rel))
        shutil.copy(os.path.join(GOLDEN, "manifest.json"), golden)
        damaged = ["kernel/add.h5", "kernel/softmax.h5"]
        for rel in damaged:
            self.assertIn(rel, listed)
            os.remove(os.path.join(golden, rel))
            with open(os.path.join(golden, rel), "wb") as f:
                f.write(b"not the exported bytes")
        report = os.path.join(WORK, "refused-report")
        shutil.rmtree(report, ignore_errors=True)
        rc, out, err = run("check", "--golden", golden, "--stage", "kernel.add", "--report", report)
        self.assertEqual(rc, 2, err)
        self.assertIn(os.path.join(golden, "kernel/add.h5") + ": sha256", err)
        self.assertNotIn("softmax", err)  # a file this stage does not read
        self.assertIn("scripts/export_golden.py --out " + golden, err)
        self.assertNotIn("rebuild", err)  # the build's golden target writes golden/, not this folder
        self.assertFalse(os.path.exists(report))
        rc, out, err = run("verify-fixtures", "--golden", golden)
        self.assertEqual(rc, 2, err)
        self.assertIn("2 fixture files", err)
        for rel in damaged:
            self.assertIn(os.path.join(golden, rel) + ": sha256", err)
        shutil.rmtree(golden)

    def test_folders_that_are_not_there_or_not_fixtures(self):
        # a mistyped --golden or --shared is refused by name (a missing --shared would otherwise skip
        # every stage that needs it and exit 0); a folder that is not a fixture folder is said so
        missing = os.path.join(WORK, "no-such-folder")
        for args in (("check", "--golden", missing), ("verify-fixtures", "--golden", missing),
                     ("check", "--shared", missing, "--stage", "tokenizer.*")):
            with self.subTest(args=args):
                rc, out, err = run(*args)
                self.assertEqual(rc, 105, err)
                self.assertIn(f"'{missing}' does not exist", err)
                self.assertNotIn("pass", out)
        empty = tempfile.mkdtemp(dir=WORK)
        rc, _, err = run("check", "--golden", empty, "--stage", "kernel.add", "--no-report")
        self.assertEqual(rc, 2, err)
        self.assertIn(f"{empty} holds no exported fixtures", err)
        with open(os.path.join(empty, "manifest.json"), "w") as f:
            json.dump({"model": "some other manifest"}, f)
        rc, _, err = run("verify-fixtures", "--golden", empty)
        self.assertEqual(rc, 2, err)
        self.assertIn("is not a fixture manifest", err)
        shutil.rmtree(empty)
        # the environment's shared folder is not an option, but a typo in it is said, not only skipped
        p = subprocess.run([LMLAB, "check", "--stage", "tokenizer.llama2", "--no-report"], capture_output=True, text=True,
                           env={**os.environ, "LMLAB_SHARED": missing}, timeout=120)
        self.assertIn(f"warning: LMLAB_SHARED={missing} is not a folder", p.stderr)


class Options(unittest.TestCase):
    def test_bad_values_name_the_option(self):
        rc, _, err = run("generate", "--max-new-tokens", "abc")
        self.assertEqual(rc, 105)
        self.assertTrue(err.startswith("lmlab: --max-new-tokens: 'abc' is not a whole number"), err)  # as every error
        rc, _, err = run("generate", "--threads", "100000")
        self.assertEqual(rc, 105)
        self.assertTrue(err.startswith("lmlab: --threads: '100000' is not a whole number from 1 to 256"), err)
        rc, _, err = run("generate", "--seed", "-1")
        self.assertEqual(rc, 105)
        self.assertIn("--seed", err)
        rc, _, err = run("generate", "--top-p", "2")
        self.assertEqual(rc, 105)
        self.assertTrue(err.startswith("lmlab: --top-p: '2' is not a number in (0, 1] (1 = off)"), err)
        rc, _, err = run("generate", "--temperature", "-1")
        self.assertEqual(rc, 105)
        self.assertTrue(err.startswith("lmlab: --temperature: '-1' is not a number >= 0, at most 3.4e+38 (0 = greedy)"), err)
        rc, _, err = run("generate", "--temperature", "1e39")  # more than its float holds
        self.assertEqual(rc, 105, err)
        self.assertIn("--temperature: '1e39'", err)

    def test_more_threads_than_cores_is_said(self):
        many = (os.cpu_count() or 1) + 1
        rc, _, err = run("generate", "--threads", many, "--prompt-ids", "1", "--max-new-tokens", 1)
        self.assertEqual(rc, 0, err)  # a warning: the answer is the same, only slower
        self.assertIn(f"--threads {many} but this machine has", err)
        self.assertIn("docs/performance.md", err)

    def test_help_documents_exit_codes(self):
        rc, out, _ = run("--help")
        self.assertEqual(rc, 0)
        self.assertIn("Exit codes", out)

    def test_version(self):
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertTrue(out.startswith("lmlab "), out)
        self.assertIn("build", out)

    def test_verify_missing_model(self):
        missing = os.path.join(WORK, "no-such-model")
        for cmd in (("verify",), ("generate",), ("trace", "--prompt", "In the"), ("decode", "1"),
                    ("decode", "1", "--tokenizer", TINY_LLAMA), ("tokenize", "-", "--tokenizer", TINY_LLAMA)):
            with self.subTest(cmd=cmd[0]):
                rc, _, err = run(*cmd, "--model", missing)
                self.assertEqual(rc, 2)
                self.assertIn(f"--model {missing}: no such file or directory", err)

    def test_the_default_model_is_said_to_be_the_test_model(self):
        # without --model the text comes from random weights: stderr says so (and nothing with --model)
        rc, _, err = run("generate", "--prompt-ids", "1", "--max-new-tokens", 1)
        self.assertEqual(rc, 0, err)
        self.assertIn("no --model given: " + os.path.abspath(TINY_LLAMA) + " is lmlab's test model", err)
        rc, _, err = run("generate", "--model", TINY_LLAMA, "--prompt-ids", "1", "--max-new-tokens", 1)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("no --model", err)

    def test_tokenize_text_where_the_file_goes(self):
        rc, out, err = run("tokenize", "Once upon a time")
        self.assertEqual((rc, out), (2, ""), err)
        self.assertIn("input 'Once upon a time': no such file", err)
        self.assertIn("| lmlab tokenize -", err)  # how to pass text
        rc, out, err = run("tokenize", "-", stdin="Once upon a time")
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("["), out)

    def test_prompt_file_and_stdin(self):
        p = os.path.join(WORK, "prompt.txt")
        with open(p, "w") as f:
            f.write("In the beginning")
        a = run("generate", "--prompt-file", p, "--max-new-tokens", 3)
        b = run("generate", "--prompt-file", "-", "--max-new-tokens", 3, stdin="In the beginning")
        c = run("generate", "--prompt", "In the beginning", "--max-new-tokens", 3)
        self.assertEqual(a[0], 0, a[2])
        self.assertEqual(a[1], b[1])
        self.assertEqual(a[1], c[1])
        rc, _, err = run("generate", "--prompt-file", os.path.join(WORK, "missing.txt"))
        self.assertEqual(rc, 2)
        self.assertIn("--prompt-file", err)

    def test_json(self):
        rc, out, err = run("generate", "--prompt", "In the", "--max-new-tokens", 4, "--json")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(len(j["ids"]), 4)
        self.assertEqual(j["stop_reason"], "max_new_tokens")
        self.assertIn("text", j)
        self.assertGreater(j["tokens_per_second"], 0)

    def test_context_full(self):
        # the tiny GPT-2's context is 256: the default fills it
        rc, _, err = run("generate", "--model", TINY_GPT2, "--prompt-ids", "50256")
        self.assertEqual(rc, 0, err)
        self.assertIn("stop: context full", err)

    def test_chat_prints_the_answer_only(self):
        if not os.path.exists(os.path.join(TINY_QWEN2, "tokenizer.json")):
            self.skipTest("tiny-qwen2 has no tokenizer.json (../shared absent at export)")
        rc, out, err = run("generate", "--model", TINY_QWEN2, "--chat", "--prompt", "Hi", "--max-new-tokens", 3)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("im_start", out)
        rc, out, err = run("generate", "--model", TINY_QWEN2, "--chat", "--prompt", "Hi", "--max-new-tokens", 3, "--verbose")
        self.assertIn("<|im_start|>user", err)

    def test_llama3_chat_template_and_bos(self):
        # Llama 3: the post-processor's <|begin_of_text|> before a prompt, its header template with --chat
        if not os.path.exists(os.path.join(TINY_LLAMA3, "tokenizer.json")):
            self.skipTest("tiny-llama3 has no tokenizer.json (../shared absent at export)")
        self.assertEqual(prompt_ids(TINY_LLAMA3, "Hello world"), [128000, 9906, 1917])
        rc, out, err = run("generate", "--model", TINY_LLAMA3, "--chat", "--prompt", "  Hi ", "--max-new-tokens", 3,
                           "--verbose")
        self.assertEqual(rc, 0, err)
        self.assertIn("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n", err)
        self.assertNotIn("start_header_id", out)

    def test_draft_prompt_line(self):
        rc, _, err = run("generate", "--prompt", "In the", "--draft", "int8", "--max-new-tokens", 4)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("prompt: 0 tokens", err)
        self.assertIn("run before the first round", err)


class ServeBatch(unittest.TestCase):
    def test_bad_and_duplicate_requests_are_refused_alone(self):
        reqs = os.path.join(WORK, "mixed.jsonl")
        with open(reqs, "w") as f:
            f.write('{"id": "a", "prompt_ids": [1, 5], "max_tokens": 2}\n')
            f.write('{"id": "a", "prompt_ids": [1, 6], "max_tokens": 2}\n')  # the same id again
            f.write('{"id": "b", "prompt_ids": [1, 99999], "max_tokens": 2}\n')  # an id past the vocabulary
            f.write('not json\n')
            f.write('{"id": "c", "prompt_ids": [1, 7], "max_tokens": 1}\n')
            f.write('{"id": "z", "prompt_ids": [1], "max_tokens": 0}\n')  # JSON's 0 is unsigned: the lower bound too
        rc, out, err = run("serve-batch", "--requests", reqs, "--quiet")
        self.assertEqual(rc, 2, out + err)
        self.assertIn(":2: id \"a\" is given to an earlier request too", err)
        self.assertIn(":3", err)
        self.assertIn(":4: not JSON", err)
        self.assertIn(':6: "max_tokens" is 0, expected 1 to', err)
        self.assertIn("[a]", out)
        self.assertIn("[c]", out)
        self.assertIn("refused: 4 requests", out)
        self.assertIn("2 requests,", out)  # served: a and c
        rc, out, err = run("serve-batch", "--requests", reqs, "--quiet", "--sequential")  # the same refusals
        self.assertEqual(rc, 2, out + err)
        self.assertIn(':6: "max_tokens" is 0', err)

    def test_progress_into_a_file_is_one_line_not_redrawn(self):
        reqs = os.path.join(WORK, "two.jsonl")
        with open(reqs, "w") as f:
            f.write('{"id": "a", "prompt_ids": [1], "max_tokens": 3}\n{"id": "b", "prompt_ids": [1, 5], "max_tokens": 3}\n')
        rc, _, err = run("serve-batch", "--model", TINY_LLAMA, "--requests", reqs)  # stderr is a pipe here
        self.assertEqual(rc, 0, err)
        self.assertNotIn("\r", err)
        self.assertEqual(len([l for l in err.splitlines() if l.startswith("step ")]), 1, err)
        self.assertIn("done 2/2", err)

    def test_one_request_is_singular(self):
        reqs = os.path.join(WORK, "single.jsonl")
        with open(reqs, "w") as f:
            f.write('{"prompt_ids": [1, 5], "max_tokens": 2}\n')
        rc, out, err = run("serve-batch", "--requests", reqs, "--quiet")
        self.assertEqual(rc, 0, err)
        self.assertIn("batched: 1 request,", out)


class Quantization(unittest.TestCase):
    """verify --against / --quantize: the report's files, its one line, and what it refuses."""

    @needs(STORIES_GGUF, STORIES_GGUF_Q8)
    def test_a_quantized_file_against_its_float_file(self):
        out_dir = os.path.join(WORK, "quant")
        rc, out, err = run("verify", "--model", STORIES_GGUF_Q8, "--against", STORIES_GGUF, "--out", out_dir)
        self.assertEqual(rc, 0, err)
        self.assertIn("stories260K-q8_0.gguf vs stories260K.gguf: KL mean", out)
        self.assertIn("most error added by blk.", out)
        with open(os.path.join(out_dir, "report.json")) as f:
            r = json.load(f)
        self.assertEqual(r["kind"], "quantization")
        self.assertEqual(len(r["tensors"]), 2 + 7 * 5)  # token_embd, output, 7 matrices in 5 layers
        self.assertEqual({t["type"] for t in r["tensors"]}, {"Q8_0", "F16"})  # ffn_down's rows of 172: F16
        self.assertGreater(r["top1_agreement"], 0.9)
        for name in ("report.md", "report.html"):
            self.assertGreater(os.path.getsize(os.path.join(out_dir, name)), 1000)
        self.assertNotIn("note:", out)

    @needs(STORIES_GGUF, STORIES_GGUF_Q8)
    def test_the_two_models_swapped_or_the_same_are_said(self):
        rc, out, err = run("verify", "--model", STORIES_GGUF, "--against", STORIES_GGUF_Q8, "--out", os.path.join(WORK, "swapped"))
        self.assertEqual(rc, 0, err)
        self.assertIn("note: --model holds more bytes of weights than --against", out)
        rc, out, err = run("verify", "--model", STORIES_GGUF, "--against", STORIES_GGUF, "--out", os.path.join(WORK, "same"))
        self.assertEqual(rc, 0, err)
        self.assertIn("KL mean 0 ", out)
        self.assertIn("no tensor adds error", out)
        self.assertNotIn("most error added by", out)
        # the same model as a Hugging Face folder: another q/k row order, said as such
        hf = os.path.join(MODELS, "stories260k-hf")
        if not os.path.isdir(hf):
            self.skipTest(f"needs {hf} (exported when ../shared is present)")
        rc, out, err = run("verify", "--model", STORIES_GGUF_Q8, "--against", hf, "--out", os.path.join(WORK, "layouts"))
        self.assertEqual(rc, 2, err)
        self.assertIn("the q/k row order of Hugging Face folders", err)
        self.assertIn("a GGUF file against a GGUF or llama2.c file", err)

    @needs(STORIES_GGUF)
    def test_quantize_in_memory_names_the_type_and_the_fallbacks(self):
        rc, out, err = run("verify", "--model", STORIES_GGUF, "--quantize", "gguf-q4_k", "--out", os.path.join(WORK, "q4k"))
        self.assertEqual(rc, 0, err)
        self.assertIn("stories260K.gguf as Q4_K vs stories260K.gguf", out)
        self.assertIn("rows are not whole 256-element blocks of Q4_K", err)  # dim 64: Q5_0 instead, as llama.cpp

    def test_refusals(self):
        rc, _, err = run("verify", "--model", TINY_LLAMA, "--quantize", "q4_k")
        self.assertEqual(rc, 105)
        self.assertIn("gguf-<type>", err)
        rc, _, err = run("verify", "--model", TINY_LLAMA, "--against", os.path.join(MODELS, "tiny-gpt2"))
        self.assertEqual(rc, 2)
        self.assertIn("architecture", err)
        missing = os.path.join(WORK, "no-such-model")
        rc, _, err = run("verify", "--model", TINY_LLAMA, "--against", missing)
        self.assertEqual(rc, 2)
        self.assertIn(f"--against {missing}", err)
        rc, _, err = run("generate", "--quantize", "gguf-q8_k", "--max-new-tokens", 1)
        self.assertEqual(rc, 105)

    def test_generate_with_a_ggml_type(self):
        rc, out, err = run("generate", "--quantize", "gguf-q6_k", "--prompt", "In the", "--max-new-tokens", 4)
        self.assertEqual(rc, 0, err)
        self.assertIn("quantized to Q6_K", err)


class Gguf(unittest.TestCase):
    """A .gguf file is a model path like any other: tokenize, trace, serve-batch and generate take it,
    its tokenizer from its metadata."""

    def test_tokenize_reads_the_vocabulary_from_the_metadata(self):
        text = "In the beginning God created the heaven and the earth."
        rc, ours, err = run("tokenize", "--model", TINY_LLAMA_GGUF, "-", stdin=text)
        self.assertEqual(rc, 0, err)
        self.assertGreater(len(json.loads(ours)), 5)
        rc, h5, err = run("tokenize", "--model", TINY_LLAMA, "-", stdin=text)
        self.assertEqual(rc, 0, err)
        self.assertEqual(ours, h5)  # the same SentencePiece vocabulary, from GGUF metadata and from the .h5

    def test_trace(self):
        out = os.path.join(WORK, "trace-gguf.html")
        rc, _, err = run("trace", "--model", TINY_LLAMA_GGUF, "--prompt", "In the beginning", "--out", out)
        self.assertEqual(rc, 0, err)
        with open(out) as f:
            self.assertIn("<html", f.read(2000).lower())

    def test_serve_batch(self):
        reqs = os.path.join(WORK, "gguf.jsonl")
        with open(reqs, "w") as f:
            f.write('{"id": "a", "prompt": "In the beginning", "max_tokens": 3}\n{"id": "b", "prompt_ids": [1, 5], "max_tokens": 2}\n')
        out_path = os.path.join(WORK, "gguf-out.jsonl")
        rc, out, err = run("serve-batch", "--model", TINY_LLAMA_GGUF, "--requests", reqs, "--out", out_path, "--quiet")
        self.assertEqual(rc, 0, err)
        with open(out_path) as f:
            rows = [json.loads(line) for line in f]
        self.assertEqual([r["id"] for r in rows], ["a", "b"])
        self.assertEqual([len(r["tokens"]) for r in rows], [3, 2])

    def test_a_damaged_file_is_refused_by_name(self):
        bad = os.path.join(WORK, "damaged.gguf")
        with open(TINY_LLAMA_GGUF, "rb") as f:
            head = f.read(4096)
        with open(bad, "wb") as f:
            f.write(head)  # the header, then nothing: the tensors point past the end
        for cmd in (["tokenize", "--model", bad, "-"], ["generate", "--model", bad, "--prompt-ids", "1"]):
            rc, out, err = run(*cmd, stdin="x")
            self.assertEqual(rc, 2, err)
            self.assertIn(bad, err)
            self.assertEqual(out, "")

    @needs(STORIES, STORIES_GGUF, STORIES_GGUF_Q8)
    def test_stories260k_gguf_tokens_are_the_llama2c_files(self):
        """llama.cpp's own conversion of stories260K (and its Q8_0 quantization) against llama2.c's file:
        the same prompt ids from the GGUF vocabulary, the same 40 greedy tokens (plain path, as the stages)."""
        ids = {}
        for model in (STORIES, STORIES_GGUF, STORIES_GGUF_Q8):
            rc, _, err = run("generate", "--model", model, "--prompt", "Once upon a time", "--max-new-tokens", 40,
                             "--plain")
            self.assertEqual(rc, 0, err)
            ids[model] = [line for line in err.splitlines() if line.startswith("new ids:")]
        self.assertEqual(ids[STORIES_GGUF], ids[STORIES])
        self.assertEqual(ids[STORIES_GGUF_Q8], ids[STORIES])


if __name__ == "__main__":
    if LMLAB is None:
        sys.exit(__doc__)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    unittest.main(argv=[sys.argv[0], "-v"])
