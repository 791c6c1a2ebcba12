// lmlab serve-batch: many requests through the continuous-batching scheduler (model/serve/scheduler.h).
//
// The requests file is JSON Lines, one request per line (blank lines and lines starting with '#'
// are skipped):
//   {"id": "a", "prompt": "Once upon a time", "max_tokens": 32, "arrival_step": 0,
//    "temperature": 0.8, "top_k": 0, "top_p": 0.9, "seed": 7}
// "prompt" is text (encoded with the model's tokenizer, with BOS as generate does) or
// "prompt_ids" a list of ids; "max_tokens" is required; the rest are optional (id: "line N",
// arrival_step 0, greedy). Any other key is an error (a typo must not silently mean a default).
//
// A bad request (malformed, an id given twice, a prompt that does not fit the model) is refused
// with its line and the reason, and the others are served: one client's mistake should not cost
// the rest their answers, as a server would not drop a batch for one bad request. The exit code is
// then 2, so a script still notices.
#include "harness/cli/commands.h"
#include "harness/cli/serve.h"
#include "harness/cli/serve_api.h"
#include <fmt/ranges.h>
#include "model/load/load.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <unistd.h>

#include "model/load/json_depth.h"
#include "model/session.h"

namespace lmlab {

namespace {

// An integer field in [lo, hi], or ModelError naming where and what.
std::int64_t int_field(const nlohmann::json& v, const std::string& where, const std::string& key, std::int64_t lo,
                       std::int64_t hi) {
    if (!v.is_number_integer())
        throw ModelError(fmt::format("{}: {} must be an integer, got {}", where, key, v.dump()));
    if (!json_integer_in(v, lo, hi))  // (both bounds: "max_tokens": 0 once reached the scheduler, which stopped the batch)
        throw ModelError(fmt::format("{}: {} is {}, expected {} to {}", where, key, v.dump(), lo, hi));
    return v.get<std::int64_t>();
}

double number_field(const nlohmann::json& v, const std::string& where, const std::string& key) {
    if (!v.is_number()) throw ModelError(fmt::format("{}: \"{}\" must be a number, got {}", where, key, v.dump()));
    return v.get<double>();
}

// One line of the requests file; ModelError naming the line (where) for anything wrong.
ServeRequest parse_request(const std::string& line, const std::string& where, std::size_t n, const TextTokenizer* tok) {
    nlohmann::json j;
    std::set<std::string> keys;  // of the request object: a key given twice is refused, not "last one wins"
    try {
        j = nlohmann::json::parse(line, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
            check_json_depth(depth, where);
            if (event == nlohmann::json::parse_event_t::key && depth == 1 && !keys.insert(parsed.get<std::string>()).second)
                throw ModelError(fmt::format("{}: key \"{}\" given twice", where, parsed.get<std::string>()));
            return true;
        });
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(fmt::format("{}: not JSON ({})", where, e.what()));
    }
    if (!j.is_object()) throw ModelError(where + ": a request is a JSON object {\"prompt\": ..., \"max_tokens\": N}");
    ServeRequest r;
    r.id = fmt::format("line {}", n);
    r.source = where;
    bool has_max = false;
    for (const auto& [key, v] : j.items()) {
        if (key == "id") {
            if (!v.is_string() && !v.is_number_integer())
                throw ModelError(fmt::format("{}: \"id\" must be a string or an integer, got {}", where, v.dump()));
            r.id = v.is_string() ? v.get<std::string>() : v.dump();
        } else if (key == "prompt") {
            if (!v.is_string()) throw ModelError(fmt::format("{}: \"prompt\" must be text, got {}", where, v.dump()));
            if (!tok)
                throw ModelError(where + ": \"prompt\" is text but no tokenizer was found with the model; give "
                                         "\"prompt_ids\" or pass --tokenizer PATH");
            r.prompt = tok->encode_prompt(v.get<std::string>(), false);
        } else if (key == "prompt_ids") {
            if (!v.is_array()) throw ModelError(fmt::format("{}: \"prompt_ids\" must be a list of ids", where));
            for (std::size_t i = 0; i < v.size(); ++i)
                r.prompt.push_back(static_cast<int>(int_field(v[i], where, fmt::format("\"prompt_ids\"[{}]", i), 0, INT32_MAX)));
        } else if (key == "max_tokens") {
            r.max_new_tokens = static_cast<std::size_t>(int_field(v, where, "\"" + key + "\"", 1, 1 << 24));
            has_max = true;
        } else if (key == "arrival_step") {
            r.arrival_step = static_cast<std::size_t>(int_field(v, where, "\"" + key + "\"", 0, 1 << 30));
        } else if (key == "temperature") {
            r.sampling.temperature = static_cast<float>(number_field(v, where, key));
        } else if (key == "top_k") {
            r.sampling.top_k = static_cast<int>(int_field(v, where, "\"" + key + "\"", 0, INT32_MAX));
        } else if (key == "top_p") {
            r.sampling.top_p = static_cast<float>(number_field(v, where, key));
        } else if (key == "seed") {
            r.sampling.seed = static_cast<std::uint64_t>(int_field(v, where, "\"" + key + "\"", 0, INT64_MAX));
        } else {
            throw ModelError(fmt::format("{}: unknown key \"{}\" (known: id, prompt, prompt_ids, max_tokens, "
                                         "arrival_step, temperature, top_k, top_p, seed)", where, key));
        }
    }
    if (j.contains("prompt") && j.contains("prompt_ids"))
        throw ModelError(where + ": give \"prompt\" or \"prompt_ids\", not both");
    if (!j.contains("prompt") && !j.contains("prompt_ids")) throw ModelError(where + ": no \"prompt\" (or \"prompt_ids\")");
    if (!has_max) throw ModelError(where + ": no \"max_tokens\" (how many tokens to generate)");
    try {
        r.sampling.validate();
    } catch (const std::exception& e) {
        throw ModelError(fmt::format("{}: {}", where, e.what()));
    }
    return r;
}

}  // namespace

RequestFile read_requests(const std::string& path, const TextTokenizer* tok) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UsageError(path + ": cannot open the requests file (--requests: JSON Lines, one request per line)");
    RequestFile file;
    std::set<std::string> ids;
    std::string line;
    for (std::size_t n = 1; std::getline(in, line); ++n) {
        const std::string where = fmt::format("{}:{}", path, n);
        const auto first = line.find_first_not_of(" \t\r");
        if (first == std::string::npos || line[first] == '#') continue;
        try {
            ServeRequest r = parse_request(line, where, n, tok);
            if (!ids.insert(r.id).second)
                throw ModelError(fmt::format("{}: id \"{}\" is given to an earlier request too: ids must be unique (the "
                                             "outputs are matched by them)",
                                             where, r.id));
            file.requests.push_back(std::move(r));
        } catch (const ModelError& e) {
            file.refused.push_back(e.what());
        }
    }
    if (in.bad()) throw UsageError(path + ": error while reading the requests file");
    if (file.requests.empty() && file.refused.empty()) throw UsageError(path + ": no requests in the file");
    return file;
}


namespace {

// Each request alone, one after another: the baseline continuous batching is measured against.
// Latencies count from the moment the previous request finished (or its arrival step, in steps:
// one step per forward, as the scheduler counts them).
ServeReport run_sequential(const Model& m, const std::vector<ServeRequest>& rs, const std::vector<int>& stops) {
    ServeReport rep;
    const auto t0 = std::chrono::steady_clock::now();
    Session session(m);
    for (const ServeRequest& r : rs) {  // all of them before running any, as serve() does
        try {
            session.check_request(r.prompt, r.max_new_tokens);
        } catch (const ModelError& e) {
            throw ModelError(fmt::format("request '{}' ({}): {}", r.id, r.source, e.what()));
        }
    }
    std::size_t step = 0;
    for (const ServeRequest& r : rs) {
        Sampler sampler(r.sampling, m.config.vocab_size);
        ServeResult res;
        const auto t_start = std::chrono::steady_clock::now();
        // one step per forward, as the scheduler counts: the prompt's gives the first token
        res.admitted_step = res.first_token_step = std::max(step, r.arrival_step);
        const auto g = session.generate(r.prompt, r.max_new_tokens, sampler, stops, [&](int) {
            if (res.first_token_ms == 0)
                res.first_token_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
        });
        res.tokens = g.tokens;
        res.stop_reason = g.stop_reason;
        res.finish_step = res.first_token_step + g.tokens.size() - 1;
        step = res.finish_step + 1;
        res.finish_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
        rep.prompt_tokens += r.prompt.size();
        rep.new_tokens += g.tokens.size();
        rep.results.push_back(std::move(res));
    }
    rep.steps = step;
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return rep;
}

}  // namespace

int cmd_serve_batch(const ServeArgs& a) {
    std::optional<OutputFile> out;  // opened before any work: a wrong path fails now
    if (!a.out_path.empty()) out.emplace(a.out_path, "--out");
    const Model model = load_model_option(a.model);
    const std::optional<TextTokenizer> tok = model_tokenizer(model, a.model, false);
    const TextTokenizer* tk = tok ? &*tok : nullptr;
    RequestFile file = read_requests(a.requests_path, tk);
    // each request against the model, refused alone (with its line) when it cannot run
    std::vector<ServeRequest> requests;
    for (ServeRequest& r : file.requests) {
        try {
            check_request(model.config, r.prompt, r.max_new_tokens);
            requests.push_back(std::move(r));
        } catch (const ModelError& e) {
            file.refused.push_back(fmt::format("{} (request '{}'): {}", r.source, r.id, e.what()));
        }
    }
    for (const std::string& why : file.refused) fmt::print(stderr, "lmlab: refused: {}\n", why);
    ServeOptions opt = a.options;
    opt.stop_ids = generation_stop_ids(model, tk);

    // one line redrawn in place (\r) on a terminal; into a file or a pipe, only the last state, once
    // (a log of \r-joined steps reads as one endless line)
    const bool terminal = ::isatty(::fileno(stderr)) != 0;
    std::optional<ServeProgress> last;
    const auto show = [](const ServeProgress& p) {
        return fmt::format("step {:>5}  batch {:>3} rows  running {:>3}  waiting {:>3}  done {}/{}  new tokens {:>6}  "
                           "pages {}/{}  {:.1f} tok/s ",
                           p.step, p.rows, p.running, p.waiting, p.finished, p.total, p.new_tokens, p.pages_used,
                           p.n_pages, static_cast<double>(p.new_tokens) / std::max(p.seconds, 1e-9));
    };
    const auto progress = [&](const ServeProgress& p) {
        if (a.quiet) return;
        if (terminal) fmt::print(stderr, "\r{}", show(p));
        else last = p;
    };
    ServeReport rep;
    if (!requests.empty()) {
        rep = a.sequential ? run_sequential(model, requests, opt.stop_ids) : serve(model, requests, opt, progress);
        if (!a.quiet && !a.sequential && terminal) fmt::print(stderr, "\n");
        if (!a.quiet && last) fmt::print(stderr, "{}\n", show(*last));
    }

    for (std::size_t i = 0; i < requests.size(); ++i) {
        const ServeRequest& q = requests[i];
        const ServeResult& r = rep.results[i];
        std::vector<int> shown = r.tokens;  // a stop token ends the text, it is not part of it
        if (!shown.empty() && std::find(opt.stop_ids.begin(), opt.stop_ids.end(), shown.back()) != opt.stop_ids.end())
            shown.pop_back();
        // the continuation of its prompt (decode's rule: the space before its first word kept), so that
        // the prompt's text followed by this is the whole text
        const std::string text = tk ? tk->decode(shown, q.prompt) : "";
        fmt::print("[{}] {}\n", q.id, tk ? text : fmt::format("ids {}", fmt::join(r.tokens, ",")));
        if (out) {
            nlohmann::json j = {{"id", q.id},
                                {"prompt_tokens", q.prompt.size()},
                                {"tokens", r.tokens},
                                {"stop_reason", r.stop_reason},
                                {"arrival_step", q.arrival_step},
                                {"steps_to_first_token", r.first_token_step - q.arrival_step},
                                {"steps_to_finish", r.finish_step - q.arrival_step},
                                {"ms_to_first_token", r.first_token_ms},
                                {"ms_to_finish", r.finish_ms}};
            if (tk) j["text"] = text;
            out->write(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        }
    }
    if (out)
        for (const std::string& why : file.refused)
            out->write(nlohmann::json({{"refused", why}}).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    if (!requests.empty()) {
        fmt::print("\n{:<16} {:>7} {:>6} {:>8} {:>9} {:>10} {:>10} {:>10}  {}\n", "request", "prompt", "new", "arrival",
                   "admitted", "steps:1st", "steps:end", "ms:1st", "ms:end / stop");
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const ServeResult& r = rep.results[i];
            fmt::print("{:<16} {:>7} {:>6} {:>8} {:>9} {:>10} {:>10} {:>10.1f}  {:.1f} / {}\n", requests[i].id,
                       requests[i].prompt.size(), r.tokens.size(), requests[i].arrival_step, r.admitted_step,
                       r.first_token_step - requests[i].arrival_step, r.finish_step - requests[i].arrival_step,
                       r.first_token_ms, r.finish_ms, r.stop_reason);
        }
        const double tps = static_cast<double>(rep.new_tokens) / std::max(rep.seconds, 1e-9);
        const std::string n_requests = fmt::format("{} request{}", requests.size(), requests.size() == 1 ? "" : "s");
        if (a.sequential)
            fmt::print("\nsequential: {} one after another, {} prompt + {} new tokens in {:.3f} s: {:.1f} new tok/s "
                       "({:.1f} tok/s with the prompts)\n",
                       n_requests, rep.prompt_tokens, rep.new_tokens, rep.seconds, tps,
                       static_cast<double>(rep.prompt_tokens + rep.new_tokens) / std::max(rep.seconds, 1e-9));
        else
            fmt::print("\nbatched: {}, {} prompt + {} new tokens in {} steps, {:.3f} s: {:.1f} new tok/s ({:.1f} tok/s "
                       "with the prompts); largest batch {} rows; peak {} of {} pages of {} positions (chunk {}, up to {} "
                       "running)\n",
                       n_requests, rep.prompt_tokens, rep.new_tokens, rep.steps, rep.seconds, tps,
                       static_cast<double>(rep.prompt_tokens + rep.new_tokens) / std::max(rep.seconds, 1e-9), rep.max_rows,
                       rep.peak_pages, rep.n_pages, rep.page_size, opt.chunk, opt.max_running);
    }
    if (out) {
        out->close();  // checked: a full disk is an error, not "outputs: <path>"
        fmt::print("outputs: {}\n", out->path());
    }
    if (!file.refused.empty())
        fmt::print("refused: {} request{} (reasons above, on stderr{})\n", file.refused.size(),
                   file.refused.size() == 1 ? "" : "s", out ? " and in --out" : "");
    finish_stdout();
    return file.refused.empty() ? kExitOk : kExitError;
}

}  // namespace lmlab
