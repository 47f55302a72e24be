using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using SensMerging.Scorers;
using TorchSharp;

// Sensitivity scoring, the project's scorer vs a straightforward PyTorch script (peer_scoring.py, plain
// loss.backward()), on one random BF16 Qwen2-architecture model, same samples, each in its own process: time and
// peak RSS (VmHWM / ru_maxrss) of each, and how far apart their scores are. The project's scorer runs in each mode
// asked for (--modes): in memory (the whole model loaded) and streamed under --max-memory (the model read from its
// file block by block); for the streamed run the bench also prints the peak RSS against the budget.
var inv = CultureInfo.InvariantCulture;
var options = Options.Parse(args);
if (options.Child is { } childSamples)
{
    // Child: score and report; nothing else runs in this process.
    torch.set_num_threads(options.Threads);
    var calibration = File.ReadAllLines(childSamples).Select(t => new TextSample(t)).ToArray();
    // The process's own footprint (runtime, libtorch loaded) before any model: the overhead beside the budget.
    using (var warm = torch.ones(4))
    {
        _ = warm.sum().item<float>();
    }
    var baseline = Status("VmRSS");
    var scorer = new SensitivityScorer();
    var context = new ScoringContext
    {
        Models = [new ScoredModel("bench", options.ModelDir, new TextDataset("bench", childSamples, calibration, options.Tokens))],
        Runtime = new LlamaRuntime(),
        Parameters = new ResolvedParameters(new Dictionary<string, object> { [Calibration.Samples] = (long)calibration.Length, [Calibration.MaxLength] = (long)options.Tokens }, []),
        Logger = NullLogger.Instance,
        MaxMemoryBytes = options.ChildBudget,
    };
    var watch = Stopwatch.StartNew();
    var table = await scorer.ScoreAsync(context, CancellationToken.None);
    var seconds = watch.Elapsed.TotalSeconds;
    var scores = new JsonObject();
    for (var g = 0; g < table.Columns.Count; g++)
    {
        scores[table.Columns[g]] = table.Values[0][g];
    }
    Console.WriteLine(new JsonObject
    {
        ["seconds"] = seconds,
        ["scoring_seconds"] = table.Details["seconds"],
        ["peak_rss_bytes"] = Status("VmHWM"),
        ["baseline_rss_bytes"] = baseline,
        ["scores"] = scores,
    }.ToJsonString());
    return;
}

if (options.Modes.Contains("streamed") && options.MaxMemory is null)
{
    throw new ArgumentException("the streamed mode needs --max-memory SIZE (e.g. --max-memory 650MB)");
}
Directory.CreateDirectory(options.Root);
var python = "/usr/bin/python3";
var script = Path.Combine(AppContext.BaseDirectory, "peer_scoring.py");
Console.WriteLine($"sensmerge scoring bench {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC: layers={options.Layers} hidden={options.Hidden} heads={options.Heads} kv={options.KvHeads} intermediate={options.Intermediate} vocab={options.Vocab}, {options.Samples} samples x {options.Tokens} tokens, {options.Threads} torch threads; load average {File.ReadAllText("/proc/loadavg").Trim()}");
if (!File.Exists(Path.Combine(options.ModelDir, "model.safetensors")))
{
    Run(python, [script, "make", options.ModelDir, .. new[] { options.Layers, options.Hidden, options.Heads, options.KvHeads, options.Intermediate, options.Vocab, 7 }.Select(v => v.ToString(inv))]);
}
Console.WriteLine($"model: {new FileInfo(Path.Combine(options.ModelDir, "model.safetensors")).Length / 1e6:F0} MB of BF16 weights");

// A word-level tokenizer of 1000 words; each sample is BOS + (tokens - 1) random words.
var words = Enumerable.Range(0, 1000).Select(i => "w" + i.ToString(inv)).ToArray();
var vocab = new JsonObject { ["<pad>"] = 0, ["<s>"] = 1, ["</s>"] = 2, ["<unk>"] = 3 };
for (var i = 0; i < words.Length; i++)
{
    vocab[words[i]] = i + 4;
}
var tokenizerJson = new JsonObject
{
    ["version"] = "1.0",
    ["added_tokens"] = new JsonArray(Enumerable.Range(0, 4).Select(i => (JsonNode)new JsonObject { ["id"] = i, ["content"] = new[] { "<pad>", "<s>", "</s>", "<unk>" }[i], ["special"] = true }).ToArray()),
    ["pre_tokenizer"] = new JsonObject { ["type"] = "WhitespaceSplit" },
    ["post_processor"] = JsonNode.Parse("""{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]}"""),
    ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = "<unk>" },
};
File.WriteAllText(Path.Combine(options.ModelDir, "tokenizer.json"), tokenizerJson.ToJsonString());
var random = new Random(11);
var texts = Enumerable.Range(0, options.Samples).Select(_ => string.Join(' ', Enumerable.Range(0, options.Tokens - 1).Select(_ => words[random.Next(words.Length)]))).ToArray();
var textsPath = Path.Combine(options.Root, "samples.txt");
File.WriteAllLines(textsPath, texts);
var tokenizer = TokenizerLoader.Load(options.ModelDir, LlamaConfig.Load(Path.Combine(options.ModelDir, "config.json")));
var encoded = new JsonArray();
foreach (var text in texts)
{
    var sample = tokenizer.Encode(new TextSample(text), options.Tokens);
    encoded.Add(new JsonObject
    {
        ["ids"] = new JsonArray(sample.Ids.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
        ["mask"] = new JsonArray(sample.LossMask.Select(m => (JsonNode)JsonValue.Create(m)).ToArray()),
    });
}
var samplesPath = Path.Combine(options.Root, "samples.json");
File.WriteAllText(samplesPath, new JsonObject { ["samples"] = encoded }.ToJsonString());

var plan = new StreamingPlan(LlamaConfig.Load(Path.Combine(options.ModelDir, "config.json")), 4);
Console.WriteLine($"FP32 weights {plan.WeightBytes / 1e6:F0} MB; one block {plan.LayerBytes / 1e6:F1} MB; modes {string.Join(",", options.Modes)}; budget for the streamed mode {(options.MaxMemory is { } mm ? $"{mm / 1e6:F0} MB ({(double)plan.WeightBytes / mm:F1}x smaller than the FP32 weights)" : "none")}");
// The project's modes first (minutes), then the PyTorch script (the longest part), then the comparisons.
var self = Environment.ProcessPath!;
var results = new List<(string Mode, JsonNode Result)>();
foreach (var mode in options.Modes)
{
    var childArgs = new List<string>();
    if (Path.GetFileNameWithoutExtension(self) == "dotnet")
    {
        childArgs.Add(typeof(Options).Assembly.Location);
    }
    childArgs.AddRange(args);
    childArgs.AddRange(["--child", textsPath, "--child-mode", mode]);
    var ours = JsonNode.Parse(Run(self, [.. childArgs]).Trim().Split('\n').Last())!;
    results.Add((mode, ours));
    var oursSeconds = ours["seconds"]!.GetValue<double>();
    var oursPeak = ours["peak_rss_bytes"]!.GetValue<long>();
    var oursBaseline = ours["baseline_rss_bytes"]!.GetValue<long>();
    Console.WriteLine($"sensmerge scorer, {mode}: {oursSeconds:F1} s (load + scoring), peak RSS {oursPeak / 1e6:F0} MB (the process before any model: {oursBaseline / 1e6:F0} MB); {DateTime.UtcNow:HH:mm} UTC, load average {File.ReadAllText("/proc/loadavg").Trim()}");
    if (mode == "streamed" && options.MaxMemory is { } budget)
    {
        Console.WriteLine($"  streamed: peak RSS {oursPeak / 1e6:F0} MB = budget {budget / 1e6:F0} MB {(oursPeak <= budget + oursBaseline ? "+" : "+ MORE THAN")} the process's own {oursBaseline / 1e6:F0} MB ({(oursPeak - oursBaseline) / 1e6:F0} MB above it; {(oursPeak <= budget + oursBaseline ? "within" : "OVER")} budget + overhead)");
    }
}
if (options.SkipPeer)
{
    Console.WriteLine($"load average at end {File.ReadAllText("/proc/loadavg").Trim()}");
    return;
}
var peer = JsonNode.Parse(Run(python, [script, "score", options.ModelDir, samplesPath, options.Threads.ToString(inv)]))!;
Console.WriteLine($"pytorch script: {peer["seconds"]!.GetValue<double>():F1} s scoring (+{peer["load_seconds"]!.GetValue<double>():F1} s load), peak RSS {peer["peak_rss_bytes"]!.GetValue<long>() / 1e6:F0} MB; {DateTime.UtcNow:HH:mm} UTC");
var peerTotal = peer["seconds"]!.GetValue<double>() + peer["load_seconds"]!.GetValue<double>();
foreach (var (mode, ours) in results)
{
    var worst = 0.0;
    foreach (var (group, value) in peer["scores"]!.AsObject())
    {
        var expected = value!.GetValue<double>();
        var actual = ours["scores"]![group]?.GetValue<double>() ?? double.NaN;
        worst = Math.Max(worst, Math.Abs(actual - expected) / Math.Abs(expected));
    }
    Console.WriteLine($"  {mode}: time ratio (sensmerge / pytorch, both including the model load): {ours["seconds"]!.GetValue<double>() / peerTotal:F2}");
    Console.WriteLine($"  {mode}: peak RSS ratio (sensmerge / pytorch): {(double)ours["peak_rss_bytes"]!.GetValue<long>() / peer["peak_rss_bytes"]!.GetValue<long>():F2}");
    Console.WriteLine($"  {mode}: largest relative score difference over {peer["scores"]!.AsObject().Count} groups: {worst:E2}");
}
Console.WriteLine($"load average at end {File.ReadAllText("/proc/loadavg").Trim()}");
return;

static string Run(string file, IEnumerable<string> arguments)
{
    var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, UseShellExecute = false };
    foreach (var a in arguments)
    {
        start.ArgumentList.Add(a);
    }
    using var process = Process.Start(start)!;
    var output = process.StandardOutput.ReadToEnd();
    process.WaitForExit();
    if (process.ExitCode != 0)
    {
        throw new InvalidOperationException($"{file} {string.Join(' ', start.ArgumentList)} failed ({process.ExitCode})");
    }
    return output;
}

static long Status(string key)
{
    foreach (var line in File.ReadLines("/proc/self/status"))
    {
        if (line.StartsWith(key + ":", StringComparison.Ordinal))
        {
            return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
    }
    return 0;
}

/// <summary>
/// Command line: model shape (defaults: Qwen2.5-0.5B), samples, tokens, threads, root folder, the scorer's modes
/// (<c>--modes inmemory,streamed</c>), the streamed mode's budget (<c>--max-memory 650MB</c>), <c>--skip-peer true</c>.
/// </summary>
internal sealed record Options(string Root, int Layers, int Hidden, int Heads, int KvHeads, int Intermediate, int Vocab, int Samples, int Tokens, int Threads, string? Child)
{
    public string ModelDir => Path.Combine(Root, "model");

    public IReadOnlyList<string> Modes { get; init; } = ["inmemory", "streamed"];

    public long? MaxMemory { get; init; }

    public bool SkipPeer { get; init; }

    public string? ChildMode { get; init; }

    /// <summary>The budget the child scores under: the streamed mode's, none in memory.</summary>
    public long? ChildBudget => ChildMode == "streamed" ? MaxMemory : null;

    public static Options Parse(string[] args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
            {
                throw new ArgumentException($"unexpected argument '{args[i]}'");
            }
            values[args[i][2..]] = args[i + 1];
        }
        int Int(string key, int fallback) => values.TryGetValue(key, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
        return new Options(
            values.GetValueOrDefault("root") ?? Path.Combine(Path.GetTempPath(), "sensmerge-scoring-bench"),
            Int("layers", 24), Int("hidden", 896), Int("heads", 14), Int("kv", 2), Int("intermediate", 4864), Int("vocab", 151936),
            Int("samples", 16), Int("tokens", 256), Int("threads", 2), values.GetValueOrDefault("child"))
        {
            Modes = (values.GetValueOrDefault("modes") ?? "inmemory,streamed").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(m => m is "inmemory" or "streamed" ? m : throw new ArgumentException($"unknown mode '{m}' (inmemory, streamed)")).ToArray(),
            MaxMemory = values.TryGetValue("max-memory", out var budget) ? SensMerging.Core.SafeTensors.ByteSize.Parse(budget) : null,
            SkipPeer = values.TryGetValue("skip-peer", out var skip) && bool.Parse(skip),
            ChildMode = values.GetValueOrDefault("child-mode"),
        };
    }
}
