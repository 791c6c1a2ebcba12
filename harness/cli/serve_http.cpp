// lmlab serve: the continuous-batching scheduler (model/serve/scheduler.h) behind an OpenAI-compatible
// HTTP/1.1 API (cpp-httplib, Debian's libcpp-httplib-dev 0.11). The request bodies and the text
// rules are in serve_api.h; this file is the threads, the queues and the wire.
//
// Threads:
//   - cpp-httplib's workers (--http-threads, one per open connection): read and check a request
//     (serve_api.h), put a Job in the inbox, then wait on the Job's own queue and write what comes:
//     one server-sent event per token, or one JSON answer at the end. A slow or vanished client holds
//     its worker, never the scheduler.
//   - the scheduler thread: takes the inbox, drops cancelled jobs, runs Scheduler::step() (one
//     batched forward for every running request), and pushes each new token onto its Job's queue.
//     It never touches a socket and never waits for a client: a push is a short lock and a notify.
//   - the main thread: binds, starts the others, then waits for SIGTERM or SIGINT (blocked in every
//     thread and taken with sigtimedwait, so no work happens in a signal handler).
// Cancellation: a handler that cannot write (the client went away) or that saw a stop string sets
// the Job's `cancel` flag; the scheduler cancels it before its next step (its pages go back to the
// pool then). A streamed request notices a vanished client at its next write: a token, or a
// comment line (": keep-alive") every half second while it waits in the queue.
// Back-pressure: past --queue waiting requests (inbox + the scheduler's queue) the answer is 429 at
// once. Shutdown: stop accepting (the listening socket is shut), answer 503 on open connections,
// let the in-flight requests finish for --shutdown-timeout seconds, cancel what is left (a stream
// ends with an error event and [DONE], a waiting client gets 503), then exit 0.
#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <ctime>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fmt/format.h>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sys/socket.h>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "harness/cli/commands.h"
#include "harness/cli/serve_api.h"
#include "model/load/load.h"

namespace lmlab {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

constexpr std::size_t kMaxBodyBytes = 1 << 20;    // a 1 MiB body holds more prompt than any context here: 413 past it
constexpr std::size_t kMaxHeaderBytes = 32 << 10; // all headers together (cpp-httplib caps one line at 8 KiB): 431 past it
constexpr std::size_t kMaxHeaders = 100;
constexpr double kRateWindow = 10;                // seconds: /metrics' tokens per second
constexpr auto kHeartbeat = std::chrono::milliseconds(500);  // a queued stream's comment line: finds vanished clients

// The routes (registered in Server::routes): the 404 message lists them, a known path with another
// method is 405 with this method in Allow.
struct Route {
    const char* method;
    const char* path;
};
constexpr std::array<Route, 5> kRoutes = {{{"POST", "/v1/completions"},
                                           {"POST", "/v1/chat/completions"},
                                           {"GET", "/v1/models"},
                                           {"GET", "/health"},
                                           {"GET", "/metrics"}}};

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(e.body()), "application/json");
}

// An error answered before the request's body is read, on a connection that then closes: its unread
// body must not be parsed as the next request. cpp-httplib 0.11 keeps a connection open unless the
// *request* said "Connection: close"; what ends it is a response whose body provider fails after
// writing the whole body (the keep-alive loop stops on a failed write and closes the socket).
void send_error_and_close(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_header("Connection", "close");
    auto body = std::make_shared<std::string>(dump(e.body()));
    res.set_content_provider(body->size(), "application/json", [body](std::size_t, std::size_t, httplib::DataSink& sink) {
        sink.write(body->data(), body->size());
        return false;  // written in full; false ends the connection (see above)
    });
}

// A Content-Length value as a byte count (saturated at SIZE_MAX), or nullopt when it is not a decimal
// number ("-5", "abc", "": cpp-httplib 0.11 would read those as 0 or as a huge length).
std::optional<std::size_t> byte_count(const std::string& v) {
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    std::size_t n = 0;
    for (char ch : v) {
        const std::size_t d = static_cast<std::size_t>(ch - '0');
        if (n > (SIZE_MAX - d) / 10) return SIZE_MAX;
        n = n * 10 + d;
    }
    return n;
}

// The headers cpp-httplib 0.11 adds to every request itself: not the client's, not counted against
// the header limits.
bool added_by_httplib(const std::string& name) {
    return name == "REMOTE_ADDR" || name == "REMOTE_PORT" || name == "LOCAL_ADDR" || name == "LOCAL_PORT";
}

// 404 (no such path: the message lists the routes) or 405 (a known path, another method; the
// caller sets Allow to *allow), or nullopt when the route exists.
std::optional<ApiError> route_error(const std::string& method, const std::string& path, const char** allow) {
    const auto route = std::find_if(kRoutes.begin(), kRoutes.end(), [&](const Route& x) { return path == x.path; });
    if (route == kRoutes.end()) {
        std::string routes;
        for (const Route& x : kRoutes) routes += fmt::format("{}{} {}", routes.empty() ? "" : ", ", x.method, x.path);
        return ApiError(404, fmt::format("no route {} {}: this server has {}", method, path, routes), "invalid_request_error",
                        "", "not_found");
    }
    if (method == route->method || (method == "HEAD" && std::string_view(route->method) == "GET")) return std::nullopt;
    *allow = route->method;
    return ApiError(405, fmt::format("{} {}: this route takes {} only", method, path, route->method), "invalid_request_error",
                    "", "method_not_allowed");
}

// ---- Metrics -------------------------------------------------------------------------------------

// Prometheus's histogram: cumulative counts per upper bound (seconds), their sum and count.
class Histogram {
public:
    void observe(double s) {
        for (std::size_t i = 0; i < kBounds.size(); ++i)
            if (s <= kBounds[i]) ++counts_[i];
        sum_ += s;
        ++count_;
    }
    void render(std::string& out, const std::string& name, const std::string& help) const {
        out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
        for (std::size_t i = 0; i < kBounds.size(); ++i) out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, kBounds[i], counts_[i]);
        out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name, count_);
    }

private:
    static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                       0.25,  0.5,    1,     2.5,  5,     10,  30};
    std::array<std::uint64_t, kBounds.size()> counts_{};
    double sum_ = 0;
    std::uint64_t count_ = 0;
};

// What GET /metrics shows. The scheduler thread publishes its gauges after every step; handlers
// count outcomes. One mutex: every update is a few additions.
struct Metrics {
    std::mutex mu;
    std::size_t running = 0, waiting = 0, pages_used = 0, pages_total = 0;
    std::uint64_t steps = 0, new_tokens = 0, prompt_tokens = 0;
    Clock::time_point started = Clock::now();
    // (time, new_tokens) after each step of the last 10 s, and the last step before them
    std::deque<std::pair<Clock::time_point, std::uint64_t>> recent;
    // Drops the samples before the last one older than 10 s (the window's base).
    void trim(Clock::time_point now) {
        while (recent.size() > 1 && seconds_between(recent[1].first, now) > kRateWindow) recent.pop_front();
    }
    Histogram ttft, itl;
    std::map<std::string, std::uint64_t> outcomes;  // requests by how they ended

    void count(const std::string& outcome) {
        std::lock_guard lock(mu);
        ++outcomes[outcome];
    }
};

// ---- One request between its handler and the scheduler -------------------------------------------

struct Event {
    int token = 0;
    TokenLogprobs logprobs;  // when the request asked for them
};

enum class End { None, Finished, Cancelled, Shutdown, Failed };

struct Job {
    CompletionRequest req;
    Clock::time_point received;  // when its handler started: time to first token counts from here
    std::atomic<bool> cancel{false};  // set by its handler (client gone, stop string); read by the scheduler thread
    // the scheduler thread -> the handler, under mu
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Event> events;
    End end = End::None;
    std::string stop_reason;  // End::Finished: the scheduler's ("stop token 2", "max_new_tokens", "context full")
    std::string failure;      // End::Failed
    // the scheduler thread's own
    Clock::time_point last_token;
    bool has_token = false;

    void close(End how, std::string reason = {}) {
        {
            std::lock_guard lock(mu);
            if (end != End::None) return;
            end = how;
            (how == End::Failed ? failure : stop_reason) = std::move(reason);
        }
        cv.notify_all();
    }
};

// A cpp-httplib server whose listening socket can be shut without ending the connections already
// open: accept() fails, listen_after_bind() stops taking connections and joins its workers once
// they finish; streams keep going (cpp-httplib ends them only when stop() clears svr_sock_).
class HttpServer : public httplib::Server {
public:
    // cpp-httplib 0.11 listens with a backlog of 5: 32 clients connecting at once overflow it, the
    // kernel drops their SYNs, and each waits a second for its retry. listen() again sets a new one.
    void set_backlog(int n) { ::listen(svr_sock_, n); }
    void stop_accepting() { ::shutdown(svr_sock_, SHUT_RDWR); }
    // After stop_accepting(): idle keep-alive connections end at their next check, and so does
    // listen_after_bind(). (The socket itself was closed by listen_after_bind.)
    void forget_socket() { svr_sock_ = INVALID_SOCKET; }
};

class Server {
public:
    Server(const Model& m, const TextTokenizer& tok, const ServeHttpArgs& a, ServeOptions opt)
        : model_(m), tok_(tok), args_(a), opt_(std::move(opt)),
          ctx_{m.config, tok, model_id(a.model.model_path), opt_.page_size, opt_.n_pages},
          seeds_(std::random_device{}()) {
        metrics_.pages_total = opt_.n_pages;
    }

    int run();

private:
    static std::string model_id(const std::string& path) {
        std::filesystem::path p(path);
        if (!p.has_filename()) p = p.parent_path();  // "tiny-qwen2/"
        return p.filename().string();
    }

    void routes();
    void scheduler_loop(Scheduler& sched);
    void on_update(Job& job, const Scheduler::Update& u);
    void completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
    void answer(Job& job, httplib::Response& res);                              // stream: false
    void stream(const std::shared_ptr<Job>& job, httplib::Response& res);       // stream: true
    std::string metrics_text();
    enum class Queued { Yes, Full, ShuttingDown };
    Queued submit(const std::shared_ptr<Job>& job);

    const Model& model_;
    const TextTokenizer& tok_;
    const ServeHttpArgs& args_;
    const ServeOptions opt_;
    const ApiContext ctx_;
    HttpServer http_;
    Metrics metrics_;
    std::atomic<bool> draining_{false};
    std::atomic<std::uint64_t> next_id_{0};
    std::atomic<int> open_jobs_{0};  // jobs a handler or a stream still holds (shutdown waits for them)
    std::mutex seed_mu_;
    std::mt19937_64 seeds_;  // a request without "seed" gets the next one

    // the inbox: handlers -> the scheduler thread
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::shared_ptr<Job>> inbox_;
    std::size_t sched_waiting_ = 0;  // the scheduler's queue after its last step
    bool cancel_all_ = false, stop_ = false;
};

Server::Queued Server::submit(const std::shared_ptr<Job>& job) {
    {
        std::lock_guard lock(mu_);
        // (a handler that began before the signal may come here after the scheduler stopped)
        if (cancel_all_ || stop_) return Queued::ShuttingDown;
        if (inbox_.size() + sched_waiting_ >= args_.queue) return Queued::Full;
        inbox_.push_back(job);
    }
    cv_.notify_one();
    return Queued::Yes;
}

// ---- The scheduler thread ------------------------------------------------------------------------

void Server::on_update(Job& job, const Scheduler::Update& u) {
    Event e;
    e.token = u.result.tokens.back();
    if (job.req.logprobs >= 0) e.logprobs = token_logprobs(u.logits, e.token, job.req.logprobs);
    const auto now = Clock::now();
    {
        std::lock_guard lock(metrics_.mu);
        if (job.has_token) metrics_.itl.observe(seconds_between(job.last_token, now));
        else metrics_.ttft.observe(seconds_between(job.received, now));
    }
    job.has_token = true;
    job.last_token = now;
    {
        std::lock_guard lock(job.mu);
        job.events.push_back(std::move(e));
    }
    if (u.finished) job.close(End::Finished, u.result.stop_reason);
    else job.cv.notify_all();
}

void Server::scheduler_loop(Scheduler& sched) {
    std::map<std::size_t, std::shared_ptr<Job>> live;  // handle -> job, from submit until it ends
    for (;;) {
        std::vector<std::shared_ptr<Job>> fresh;
        bool cancel_all = false;
        {
            std::unique_lock lock(mu_);
            // idle: sleep until a request comes; busy: a step after another
            cv_.wait(lock, [&] { return !inbox_.empty() || !sched.idle() || stop_ || cancel_all_; });
            fresh.swap(inbox_);
            cancel_all = cancel_all_;
            if (stop_ && fresh.empty() && sched.idle()) break;
        }
        for (const auto& job : fresh) {
            ServeRequest r;
            r.id = fmt::format("{}", static_cast<const void*>(job.get()));
            r.prompt = job->req.prompt;
            r.max_new_tokens = job->req.max_tokens;
            r.sampling = job->req.sampling;
            try {
                Job* j = job.get();
                live[sched.submit(std::move(r), [this, j](const Scheduler::Update& u) { on_update(*j, u); })] = job;
                std::lock_guard lock(metrics_.mu);
                metrics_.prompt_tokens += job->req.prompt.size();
            } catch (const ModelError& e) {  // the parser checked the same: a bug if it happens
                job->close(End::Failed, e.what());
            }
        }
        for (auto it = live.begin(); it != live.end();) {
            Job& job = *it->second;
            if (cancel_all || job.cancel) {
                sched.cancel(it->first);  // its pages go back now
                job.close(cancel_all ? End::Shutdown : End::Cancelled);
                it = live.erase(it);
            } else {
                ++it;
            }
        }
        try {
            sched.step();
        } catch (const std::exception& e) {
            // a bug, not a client's doing (every request was checked): fail every live request and
            // return all pages, so the server goes on with an empty pool
            fmt::print(stderr, "lmlab serve: internal error in a step, failing {} requests: {}\n", live.size(), e.what());
            for (auto& [handle, job] : live) {
                sched.cancel(handle);
                job->close(End::Failed, e.what());
            }
        }
        // (Job::end is written by this thread only, so it reads it without the lock)
        for (auto it = live.begin(); it != live.end();)
            it = it->second->end != End::None ? live.erase(it) : std::next(it);
        const auto now = Clock::now();
        {
            std::lock_guard lock(mu_);
            sched_waiting_ = sched.waiting();
        }
        std::lock_guard lock(metrics_.mu);
        metrics_.running = sched.running();
        metrics_.waiting = sched.waiting();
        metrics_.pages_used = sched.pages_used();
        metrics_.steps = sched.steps_run();
        metrics_.new_tokens = sched.new_tokens();
        metrics_.recent.emplace_back(now, sched.new_tokens());
        metrics_.trim(now);
    }
}

// ---- Answers -------------------------------------------------------------------------------------

const char* finish_reason(const std::string& stop_reason, bool stop_string) {
    return stop_string || stop_reason.rfind("stop token", 0) == 0 ? "stop" : "length";
}

// What a response says about a request besides its text.
struct Shape {
    std::string id;
    std::int64_t created = 0;
    bool chat = false;
};

nlohmann::json usage(std::size_t prompt, std::size_t completion) {
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

// One token's text as it reads after `before` (decode's rule: SentencePiece keeps its space unless
// it starts the text): the logprobs' token strings.
std::string token_text(const TextTokenizer& tok, int id, int before) {
    const int ids[] = {id}, ctx[] = {before};
    return tok.decode(ids, ctx);
}

// The logprobs of completions, OpenAI's legacy shape: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
void add_logprobs(nlohmann::json& lp, const TextTokenizer& tok, const Event& e, int before, std::size_t offset) {
    nlohmann::json top = nlohmann::json::object();
    for (const auto& [id, v] : e.logprobs.top) top[token_text(tok, id, before)] = v;
    lp["tokens"].push_back(token_text(tok, e.token, before));
    lp["token_logprobs"].push_back(e.logprobs.logprob);
    lp["top_logprobs"].push_back(top);
    lp["text_offset"].push_back(offset);
}

nlohmann::json empty_logprobs() {
    return {{"tokens", nlohmann::json::array()}, {"token_logprobs", nlohmann::json::array()},
            {"top_logprobs", nlohmann::json::array()}, {"text_offset", nlohmann::json::array()}};
}

nlohmann::json chunk(const Shape& s, const std::string& model, nlohmann::json choice) {
    return {{"id", s.id}, {"object", s.chat ? "chat.completion.chunk" : "text_completion"}, {"created", s.created},
            {"model", model}, {"choices", nlohmann::json::array({std::move(choice)})}};
}

ApiError shutdown_error() {
    return ApiError(503, "the server is shutting down: the request was cancelled; retry against a running server",
                    "server_error", "", "shutting_down");
}

void Server::answer(Job& job, httplib::Response& res) {
    const CompletionRequest& r = job.req;
    const std::vector<int> stops = generation_stop_ids(model_, &tok_);
    TextOutput out(tok_, r.prompt, r.stop, stops);
    std::string text;
    std::vector<int> ids;
    nlohmann::json lp = empty_logprobs();
    int before = r.prompt.back();
    End end = End::None;
    std::string reason;
    for (;;) {
        std::deque<Event> events;
        {
            std::unique_lock lock(job.mu);
            job.cv.wait(lock, [&] { return !job.events.empty() || job.end != End::None; });
            events.swap(job.events);
            if (events.empty()) {
                end = job.end;
                reason = end == End::Failed ? job.failure : job.stop_reason;
            }
        }
        for (const Event& e : events) {
            if (out.stopped()) break;
            if (r.logprobs >= 0) add_logprobs(lp, tok_, e, before, text.size());
            text += out.push(e.token);
            ids.push_back(e.token);
            before = e.token;
        }
        if (out.stopped()) {
            job.cancel = true;  // the scheduler drops it before its next step
            end = End::Finished;
            break;
        }
        if (end != End::None) break;
    }
    if (end == End::Shutdown || end == End::Cancelled) {
        metrics_.count("shutdown");
        send_error(res, shutdown_error());
        return;
    }
    if (end == End::Failed) {
        metrics_.count("failed");
        send_error(res, ApiError(500, "internal error: " + reason, "server_error", "", "internal_error"));
        return;
    }
    text += out.finish();
    const Shape s{fmt::format("{}-{}", r.endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl", next_id_++),
                  static_cast<std::int64_t>(std::time(nullptr)), r.endpoint == Endpoint::Chat};
    nlohmann::json choice = {{"index", 0}, {"finish_reason", finish_reason(reason, out.stopped())}, {"logprobs", nullptr}};
    if (s.chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
    else choice["text"] = text;
    if (r.logprobs >= 0) choice["logprobs"] = lp;
    if (r.return_token_ids) {
        choice["token_ids"] = ids;
        choice["prompt_token_ids"] = r.prompt;
    }
    nlohmann::json body = {{"id", s.id}, {"object", s.chat ? "chat.completion" : "text_completion"}, {"created", s.created},
                           {"model", ctx_.model_id}, {"choices", nlohmann::json::array({choice})},
                           {"usage", usage(r.prompt.size(), out.tokens())}};
    metrics_.count("completed");
    res.set_content(dump(body), "application/json");
}

// Server-sent events: one `data: {chunk}` per token, a last chunk with the finish reason (and the
// text held back for a possible stop string), the usage chunk when asked, `data: [DONE]`.
// The stream's state is owned by its content provider, which cpp-httplib keeps until the response is
// done or the connection is: its end is counted once, and a stream that did not finish cancels its
// request.
class SseStream {
public:
    SseStream(std::shared_ptr<Job> j, const TextTokenizer& tok, const std::vector<int>& stop_ids, Shape s,
              std::string model, Metrics& metrics, std::atomic<int>& open)
        : job_(std::move(j)), tok_(tok), out_(tok, job_->req.prompt, job_->req.stop, stop_ids), shape_(std::move(s)),
          model_(std::move(model)), before_(job_->req.prompt.back()), metrics_(metrics), open_(open) {
        ++open_;
    }
    SseStream(const SseStream&) = delete;
    SseStream& operator=(const SseStream&) = delete;
    ~SseStream() {
        metrics_.count(outcome);
        if (!done_) job_->cancel = true;
        --open_;
    }
    // cpp-httplib's content provider: waits up to kHeartbeat for tokens, writes them (or a comment
    // line); false ends the response (the client is gone, or the stream is done and sink.done() ran).
    bool next(httplib::DataSink& sink);

    std::string outcome = "cancelled";  // until the stream ends well

private:
    std::shared_ptr<Job> job_;
    const TextTokenizer& tok_;
    TextOutput out_;
    Shape shape_;
    std::string model_;
    int before_;               // the token before the next one (the logprobs' token strings)
    std::size_t offset_ = 0;   // of the next token's text in the completion
    bool role_sent_ = false, done_ = false;
    Metrics& metrics_;
    std::atomic<int>& open_;
};

bool SseStream::next(httplib::DataSink& sink) {
    Job& job = *job_;
    const CompletionRequest& r = job.req;
    const auto send = [&](const nlohmann::json& j) {
        const std::string line = "data: " + dump(j) + "\n\n";
        return sink.write(line.data(), line.size());
    };
    const auto choice = [&](const std::string& text) {
        nlohmann::json c = {{"index", 0}, {"finish_reason", nullptr}, {"logprobs", nullptr}};
        if (!shape_.chat) {
            c["text"] = text;
        } else {
            c["delta"] = {{"content", text}};
            if (!role_sent_) c["delta"]["role"] = "assistant";
            role_sent_ = true;
        }
        return c;
    };
    std::deque<Event> events;
    End end = End::None;
    std::string reason;
    {
        std::unique_lock lock(job.mu);
        job.cv.wait_for(lock, kHeartbeat, [&] { return !job.events.empty() || job.end != End::None; });
        events.swap(job.events);
        if (events.empty()) {
            end = job.end;
            reason = end == End::Failed ? job.failure : job.stop_reason;
        }
    }
    if (events.empty() && end == End::None) {  // still waiting: a comment line, to find out whether the client is there
        static const std::string beat = ": keep-alive\n\n";
        return sink.write(beat.data(), beat.size());
    }
    for (const Event& e : events) {
        if (out_.stopped()) break;
        const std::string text = out_.push(e.token);
        nlohmann::json c = choice(text);
        if (r.return_token_ids) c["token_ids"] = {e.token};
        if (r.logprobs >= 0) {
            nlohmann::json lp = empty_logprobs();
            add_logprobs(lp, tok_, e, before_, offset_);
            c["logprobs"] = lp;
        }
        offset_ += text.size();
        before_ = e.token;
        if (!send(chunk(shape_, model_, c))) return false;  // the client is gone: ~SseStream cancels it
    }
    if (out_.stopped()) {
        job.cancel = true;
        end = End::Finished;
    }
    if (end == End::None) return true;
    if (end == End::Finished) {
        nlohmann::json c = choice(out_.finish());
        c["finish_reason"] = finish_reason(reason, out_.stopped());
        if (r.return_token_ids) c["prompt_token_ids"] = r.prompt;
        if (shape_.chat && c["delta"]["content"] == "") c["delta"].erase("content");
        if (!send(chunk(shape_, model_, c))) return false;
        if (r.include_usage) {
            nlohmann::json u = chunk(shape_, model_, {});
            u["choices"] = nlohmann::json::array();
            u["usage"] = usage(r.prompt.size(), out_.tokens());
            if (!send(u)) return false;
        }
        outcome = "completed";
    } else {  // the 200 and some tokens are sent: the error goes in the stream, as OpenAI's does
        const ApiError e = end == End::Failed ? ApiError(500, "internal error: " + reason, "server_error", "", "internal_error")
                                              : shutdown_error();
        if (!send(e.body())) return false;
        outcome = end == End::Failed ? "failed" : "shutdown";
    }
    static const std::string last = "data: [DONE]\n\n";
    done_ = true;
    if (!sink.write(last.data(), last.size())) return false;
    sink.done();
    return true;
}

void Server::stream(const std::shared_ptr<Job>& job, httplib::Response& res) {
    const CompletionRequest& r = job->req;
    auto st = std::make_shared<SseStream>(
        job, tok_, generation_stop_ids(model_, &tok_),
        Shape{fmt::format("{}-{}", r.endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl", next_id_++),
              static_cast<std::int64_t>(std::time(nullptr)), r.endpoint == Endpoint::Chat},
        ctx_.model_id, metrics_, open_jobs_);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [st](std::size_t, httplib::DataSink& sink) {
        try {
            return st->next(sink);
        } catch (const std::exception& e) {  // a bug, not the client's doing: this stream ends, the server goes on
            fmt::print(stderr, "lmlab serve: internal error while streaming: {}\n", e.what());
            st->outcome = "failed";
            return false;
        }
    });
}

void Server::completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const auto received = Clock::now();
    if (draining_) {
        metrics_.count("shutdown");
        return send_error_and_close(res, shutdown_error());
    }
    auto job = std::make_shared<Job>();
    job->received = received;
    try {
        std::uint64_t seed;
        {
            std::lock_guard lock(seed_mu_);
            seed = seeds_() >> 1;  // (0 .. 2^63 - 1, as an explicit "seed" may be)
        }
        job->req = parse_completion_request(endpoint, req.body, ctx_, seed);
    } catch (const ApiError& e) {
        metrics_.count("rejected");
        return send_error(res, e);
    }
    const Queued queued = submit(job);
    if (queued == Queued::ShuttingDown) {
        metrics_.count("shutdown");
        return send_error_and_close(res, shutdown_error());
    }
    if (queued == Queued::Full) {
        metrics_.count("overloaded");
        res.set_header("Retry-After", "1");
        return send_error(res, ApiError(429, fmt::format("the server is busy: {} requests are waiting already (lmlab serve "
                                                         "--queue {}); retry later",
                                                         args_.queue, args_.queue),
                                        "rate_limit_error", "", "queue_full"));
    }
    if (job->req.stream) return stream(job, res);
    ++open_jobs_;
    answer(*job, res);
    --open_jobs_;
}

std::string Server::metrics_text() {
    std::lock_guard lock(metrics_.mu);
    std::string out;
    const auto gauge = [&](const char* name, const char* help, double v) {
        out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, v);
    };
    const auto counter = [&](const char* name, const char* help, std::uint64_t v) {
        out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
    };
    gauge("lmlab_requests_running", "Requests in the running batch", static_cast<double>(metrics_.running));
    gauge("lmlab_requests_waiting", "Requests waiting for admission (the scheduler's queue)", static_cast<double>(metrics_.waiting));
    gauge("lmlab_kv_pages_used", "KV-cache pages held by running requests", static_cast<double>(metrics_.pages_used));
    gauge("lmlab_kv_pages_free", "KV-cache pages on the free list", static_cast<double>(metrics_.pages_total - metrics_.pages_used));
    gauge("lmlab_kv_pages_total", "KV-cache pages in the pool (--kv-pages)", static_cast<double>(metrics_.pages_total));
    // tokens since the last step before the window (0 at the start), over the window (or the time since the start)
    const auto now = Clock::now();
    metrics_.trim(now);
    const std::uint64_t base =
        !metrics_.recent.empty() && seconds_between(metrics_.recent.front().first, now) > kRateWindow ? metrics_.recent.front().second : 0;
    const double rate = static_cast<double>(metrics_.new_tokens - base) /
                        std::max(std::min(kRateWindow, seconds_between(metrics_.started, now)), 1e-3);
    gauge("lmlab_tokens_per_second", "New tokens per second over the last 10 s", rate);
    counter("lmlab_generated_tokens_total", "New tokens generated", metrics_.new_tokens);
    counter("lmlab_prompt_tokens_total", "Prompt tokens of the requests admitted to the scheduler", metrics_.prompt_tokens);
    counter("lmlab_steps_total", "Scheduler steps that ran a batch", metrics_.steps);
    metrics_.ttft.render(out, "lmlab_time_to_first_token_seconds", "From a request's arrival to its first token");
    metrics_.itl.render(out, "lmlab_inter_token_latency_seconds", "Between two tokens of one request");
    out += "# HELP lmlab_requests_total Requests by how they ended\n# TYPE lmlab_requests_total counter\n";
    for (const char* o : {"completed", "rejected", "overloaded", "cancelled", "shutdown", "failed"}) {
        const auto it = metrics_.outcomes.find(o);
        out += fmt::format("lmlab_requests_total{{outcome=\"{}\"}} {}\n", o, it == metrics_.outcomes.end() ? 0 : it->second);
    }
    return out;
}

void Server::routes() {
    http_.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { completion(Endpoint::Completions, q, r); });
    http_.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { completion(Endpoint::Chat, q, r); });
    http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& r) {
        const nlohmann::json m = {{"id", ctx_.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "lmlab"},
                                  {"max_model_len", model_.config.max_seq_len}};
        r.set_content(dump({{"object", "list"}, {"data", nlohmann::json::array({m})}}), "application/json");
    });
    http_.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
        r.status = draining_ ? 503 : 200;
        r.set_content(dump({{"status", draining_ ? "shutting down" : "ok"}}), "application/json");
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
        r.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    // Before a body is read, the requests whose body cpp-httplib 0.11 would read without a bound or
    // wait for: a chunked body, a method that may carry a body without a Content-Length (read until
    // the client closes, or 5 s of silence), a Content-Length past the limit (read to its end, then
    // thrown away), one that is not a number or disagrees with another; and headers past the limits.
    // Each is answered at once, and its connection closed (the body is never read).
    http_.set_pre_routing_handler([this](const httplib::Request& q, httplib::Response& r) {
        std::optional<ApiError> refused;
        const char* allow = nullptr;
        std::size_t bytes = 0, lines = 0;
        for (const auto& [k, v] : q.headers) {
            if (added_by_httplib(k)) continue;
            bytes += k.size() + v.size() + 4;
            ++lines;
        }
        std::vector<std::string> lengths;
        for (std::size_t i = 0; i < q.get_header_value_count("Content-Length"); ++i)
            lengths.push_back(q.get_header_value("Content-Length", i));
        const std::optional<std::size_t> parsed = lengths.empty() ? std::nullopt : byte_count(lengths[0]);
        const std::size_t length = parsed.value_or(0);  // (0: none, or not a number: refused below)
        const bool may_have_body = q.method == "POST" || q.method == "PUT" || q.method == "PATCH" || q.method == "DELETE" ||
                                   q.method == "PRI";  // (cpp-httplib's expect_content)
        if (bytes > kMaxHeaderBytes || lines > kMaxHeaders) {
            refused = ApiError(431, fmt::format("the request's headers are {} bytes in {} lines; at most {} bytes in {} lines",
                                                bytes, lines, kMaxHeaderBytes, kMaxHeaders),
                               "invalid_request_error", "", "headers_too_large");
        } else if (q.has_header("Transfer-Encoding")) {
            // cpp-httplib 0.11 applies set_payload_max_length to a Content-Length body only: a chunked
            // one it would read whole, however large (40 MB were taken, the server grew by 120 MB)
            refused = ApiError(411, fmt::format("'Transfer-Encoding: {}': this server reads a request body only with a "
                                                "Content-Length header (at most {} bytes); send the body with its length",
                                                q.get_header_value("Transfer-Encoding"), kMaxBodyBytes),
                               "invalid_request_error", "", "length_required");
        } else if (!lengths.empty() && !parsed) {
            refused = ApiError(400, fmt::format("'Content-Length: {}' is not a byte count: a decimal number of bytes (at most {})",
                                                lengths[0], kMaxBodyBytes),
                               "invalid_request_error", "", "invalid_content_length");
        } else if (lengths.size() > 1 && std::any_of(lengths.begin(), lengths.end(), [&](const std::string& v) { return v != lengths[0]; })) {
            refused = ApiError(400, fmt::format("{} Content-Length headers that disagree ({}): send one", lengths.size(),
                                                fmt::join(lengths, ", ")),
                               "invalid_request_error", "", "invalid_content_length");
        } else if (length > kMaxBodyBytes) {
            // cpp-httplib 0.11 would read such a body to its end and throw it away before its own 413
            refused = ApiError(413, fmt::format("the request body is {} bytes (its Content-Length); at most {} bytes",
                                                length, kMaxBodyBytes),
                               "invalid_request_error", "", "request_too_large");
        } else if (lengths.empty() && may_have_body) {
            refused = route_error(q.method, q.path, &allow);  // a wrong route says so first
            if (!refused)
                refused = ApiError(411, fmt::format("{} {} without a Content-Length header: send the JSON body with its "
                                                    "length (curl -d does)", q.method, q.path),
                                   "invalid_request_error", "", "length_required");
        }
        if (!refused) return httplib::Server::HandlerResponse::Unhandled;
        metrics_.count("rejected");
        if (allow) r.set_header("Allow", allow);
        send_error_and_close(r, *refused);  // its body, if any, is not read
        return httplib::Server::HandlerResponse::Handled;
    });
    // cpp-httplib adds "Keep-Alive: timeout=…" unless the request asked to close: not beside our own
    // "Connection: close" (send_error_and_close, the streams cut at shutdown)
    // (and once: cpp-httplib adds its own when the request said "Connection: close")
    http_.set_post_routing_handler([](const httplib::Request&, httplib::Response& r) {
        if (r.get_header_value("Connection") != "close") return;
        r.headers.erase("Keep-Alive");
        r.headers.erase("Connection");
        r.set_header("Connection", "close");
    });
    // cpp-httplib's own refusals (no route 404, 413 body too large, 414, 400 unparsable request line)
    // in OpenAI's shape, counted as rejected; a known path with another method is 405 with Allow
    http_.set_error_handler([this](const httplib::Request& q, httplib::Response& r) {
        // one of the handlers' own answers (counted there), in its body or, refused before the body was
        // read, from send_error_and_close's provider (content_length_: cpp-httplib 0.11's public field)
        if (!r.body.empty() || r.content_length_ > 0) return;
        metrics_.count("rejected");
        std::string message = fmt::format("HTTP {} for {} {}", r.status, q.method, q.path);
        std::string code = "http_error";
        const char* allow = nullptr;
        if (r.status == 404) {
            if (const auto e = route_error(q.method, q.path, &allow)) {
                if (allow) r.set_header("Allow", allow);
                return send_error(r, *e);
            }
        } else if (r.status == 413) {
            message = fmt::format("the request body is larger than {} bytes", kMaxBodyBytes);
            code = "request_too_large";
        } else if (r.status == 414) {
            message = "the request line is longer than 8192 bytes (cpp-httplib's limit)";
            code = "uri_too_long";
        } else if (r.status == 400) {  // (the handlers always write a body: this is cpp-httplib's own)
            // a body shorter than its Content-Length (the client stopped: cpp-httplib waited 5 s), else the
            // request line or a header line could not be read
            const auto length = byte_count(q.get_header_value("Content-Length"));
            if (q.has_header("Content-Length") && length && q.body.size() < *length) {
                message = fmt::format("the body stopped after {} of its {} bytes (Content-Length) and nothing came for 5 s: "
                                      "send the whole body",
                                      q.body.size(), *length);
                code = "incomplete_body";
            } else {
                message = "not an HTTP/1.1 request: the request line must be METHOD /path HTTP/1.1, and every header line "
                          "at most 8192 bytes";
                code = "malformed_http";
            }
        }
        send_error(r, ApiError(r.status, message, r.status >= 500 ? "server_error" : "invalid_request_error", "", code));
    });
    http_.set_exception_handler([this](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        metrics_.count("failed");
        send_error(r, ApiError(500, "internal error: " + what, "server_error", "", "internal_error"));
    });
}

int Server::run() {
    // SIGTERM and SIGINT are taken by this thread alone (sigtimedwait below): blocked here before any
    // thread starts, so every thread inherits the mask.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    Scheduler sched(model_, opt_);  // the KV pool, allocated (or refused) before the port is taken
    routes();
    http_.set_payload_max_length(kMaxBodyBytes);
    http_.set_keep_alive_timeout(2);  // an idle connection goes after 2 s (it holds a worker thread)
    const std::size_t threads = args_.http_threads;
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // SO_REUSEADDR (a restart may take the port its predecessor left in TIME_WAIT), and not
    // cpp-httplib's default SO_REUSEPORT, with which a second server binds the same port and the
    // kernel splits the connections between the two
    http_.set_socket_options([](socket_t sock) {
        const int yes = 1;
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    int port = args_.port;
    if (port == 0) port = http_.bind_to_any_port(args_.host);
    else if (!http_.bind_to_port(args_.host, port)) port = -1;
    if (port <= 0)
        throw UsageError(fmt::format("--host {} --port {}: cannot listen there (the port is taken, or the address is not "
                                     "this machine's); choose another, or --port 0 for any free port",
                                     args_.host, args_.port));
    http_.set_backlog(128);
    fmt::print(stderr, "lmlab serve: {} on http://{}:{} (model {}: context {}, vocabulary {}; up to {} running, chunk {}, "
               "{} pages of {} positions, queue {})\n",
               ctx_.model_id, args_.host, port, model_.source, model_.config.max_seq_len, model_.config.vocab_size,
               opt_.max_running, opt_.chunk, opt_.n_pages, opt_.page_size, args_.queue);
    std::fflush(stderr);

    std::thread scheduler([&] { scheduler_loop(sched); });
    std::atomic<bool> listen_ok{true};
    std::thread listener([&] { listen_ok = http_.listen_after_bind(); });

    // wait for a signal (or for the listener to fail on its own)
    int sig = 0;
    const timespec tick{0, 100'000'000};
    while (sig <= 0) {
        sig = sigtimedwait(&sigs, nullptr, &tick);
        if (!listen_ok) break;
    }
    const auto t_signal = Clock::now();
    fmt::print(stderr, "lmlab serve: {}: no new connections; finishing the requests in flight (up to {} s)\n",
               sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "the listener stopped", args_.shutdown_timeout);
    draining_ = true;
    http_.stop_accepting();
    // the requests in flight finish, until the deadline (or a second signal) cancels the rest
    const auto busy = [&] {
        std::lock_guard lock(metrics_.mu);
        std::lock_guard inbox(mu_);
        return !inbox_.empty() || metrics_.running > 0 || metrics_.waiting > 0;
    };
    bool cancelled = false;
    while (busy()) {
        const bool second = sigtimedwait(&sigs, nullptr, &tick) > 0;
        if (second || seconds_between(t_signal, Clock::now()) > args_.shutdown_timeout) {
            std::lock_guard lock(mu_);
            cancel_all_ = cancelled = true;
            break;
        }
    }
    cv_.notify_all();
    // the handlers write their last bytes (a cancelled stream's error event and [DONE])
    for (int i = 0; i < 50 && open_jobs_ > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    scheduler.join();
    http_.forget_socket();
    listener.join();
    if (!listen_ok && sig <= 0)
        throw UsageError(fmt::format("http://{}:{}: the listening socket failed; the server stopped", args_.host, port));
    std::lock_guard lock(metrics_.mu);
    std::string outcomes;
    for (const auto& [o, n] : metrics_.outcomes) outcomes += fmt::format(" {} {},", o, n);
    fmt::print(stderr, "lmlab serve: stopped after {:.1f} s{}: {} tokens in {} steps; requests:{} pages in use {}\n",
               seconds_between(t_signal, Clock::now()), cancelled ? " (the rest cancelled at the deadline)" : "",
               metrics_.new_tokens, metrics_.steps, outcomes.empty() ? " none," : outcomes, metrics_.pages_used);
    return kExitOk;
}

}  // namespace

int cmd_serve(const ServeHttpArgs& a) {
    if (kernel_path() != KernelPath::Fast)
        throw UsageError("--plain: lmlab serve batches requests, and the batched forward runs on the fast kernels only "
                         "(paged attention is attention_tiled's arithmetic); drop --plain");
    const Model model = load_model_option(a.model);
    const std::optional<TextTokenizer> tok = model_tokenizer(model, a.model, true);
    if (!tok)
        throw UsageError(fmt::format("lmlab serve needs a tokenizer (text in, text out): none found with {}; pass "
                                     "--tokenizer PATH",
                                     a.model.model_path));
    ServeOptions opt = a.options;
    opt.stop_ids = generation_stop_ids(model, &*tok);
    opt.check_invariants = a.check_invariants;
    // default pool: --max-running requests of a full context each (admission reserves prompt + max_tokens)
    if (opt.n_pages == 0) opt.n_pages = opt.max_running * ((model.config.max_seq_len + opt.page_size - 1) / opt.page_size);
    Server server(model, *tok, a, opt);
    return server.run();
}

}  // namespace lmlab
