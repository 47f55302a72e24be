using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using SensMerging.Abstractions;
using SensMerging.Registry;

// Fills a registry with realistic merges, then times list (newest 50; by strategy; by model) and show (by id, by prefix).
// With --web it times the pages and the JSON API of a real `sensmerge serve` over that registry instead (build the
// host in Release first): the server's own time per page (its Server-Timing header) and the time the client saw.
// Usage: dotnet run -c Release --project bench/SensMerging.RegistryBench [-- COUNT] [--web [--only TEXT] [--each]]
var web = args.Contains("--web");
// --only TEXT: with --web, time only the rows whose name contains TEXT, or one of TEXT's |-separated parts
// (for example --only "model page|api show").
var only = Array.IndexOf(args, "--only") is var at and >= 0 && at + 1 < args.Length ? args[at + 1] : null;
// --each: with --web, also print every request's URL and server time (which request of a row was slow, and for which merge).
var each = args.Contains("--each");
var numbers = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && (i == 0 || args[i - 1] != "--only")).ToArray();
var count = numbers.Length > 0 ? int.Parse(numbers[0], CultureInfo.InvariantCulture) : 10_000;
var folder = Path.Combine(Path.GetTempPath(), "sensmerge-registry-bench-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
Directory.CreateDirectory(folder);
var db = Path.Combine(folder, "merges.db");
string[] strategies = ["task_arithmetic", "ties", "dare_ties", "linear", "breadcrumbs_ties"];
string[] experts = ["math", "code", "knowledge", "poetry", "law", "medicine"];
var groups = new List<string> { LayerGroups.Embeddings };
groups.AddRange(Enumerable.Range(0, 21).Select(i => "model.layers." + i.ToString(CultureInfo.InvariantCulture)));
groups.Add(LayerGroups.FinalNorm);
groups.Add(LayerGroups.LmHead);

var ids = new List<string>(count);
var fill = Stopwatch.StartNew();
using (var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = db }))
{
    var rng = new Random(1);
    var start = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
    for (var batch = 0; batch < count; batch += 1000)
    {
        var records = Enumerable.Range(batch, Math.Min(1000, count - batch)).Select(i => MakeRecord(i, rng, start.AddMinutes(i * 7))).ToList();
        ids.AddRange(records.Select(r => r.Id));
        await registry.ImportAsync(records);
    }
}
fill.Stop();
var size = new FileInfo(db).Length;
Console.WriteLine($"filled {count:N0} merges in {fill.Elapsed.TotalSeconds:F1} s; file {size / 1048576.0:F1} MiB");
if (web)
{
    // The bench's data: every 23rd merge failed (no output), every tenth re-merges the previous merge's output (so that one has a descendant).
    await WebBench.RunAsync(db, ids, failed: ids.Where((_, i) => i % 23 == 0).ToList(), chained: ids.Where((_, i) => i % 10 == 5).ToList(), remerged: ids.Where((_, i) => i % 10 == 4).ToList(), only, each);
    Directory.Delete(folder, recursive: true);
    return 0;
}

foreach (var mode in new[] { RegistryConnection.Shared, RegistryConnection.Exclusive })
{
    var open = Stopwatch.StartNew();
    using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = db, Connection = mode });
    open.Stop();
    Console.WriteLine();
    Console.WriteLine($"connection={mode.ToString().ToLowerInvariant()}  open {open.Elapsed.TotalMilliseconds:F1} ms");
    var rnd = new Random(2);
    await Time("list (newest 50)", () => registry.ListAsync(new MergeQuery { Limit = 50 }), r => r.Count);
    await Time("list --strategy ties (50)", () => registry.ListAsync(new MergeQuery { Strategy = "ties", Limit = 50 }), r => r.Count);
    await Time("list --status failed (50)", () => registry.ListAsync(new MergeQuery { Status = MergeStatus.Failed, Limit = 50 }), r => r.Count);
    await Time("list --model org/poetry (50)", () => registry.ListAsync(new MergeQuery { Model = "org/poetry", Limit = 50 }), r => r.Count);
    await Time("list --model out folder", () => registry.ListAsync(new MergeQuery { Model = "/data/merged/" + ids[rnd.Next(ids.Count)] }), r => r.Count);
    await Time("list all (no limit)", () => registry.ListAsync(MergeQuery.All), r => r.Count);
    await Time("show ID (get + render)", async () => RegistryText.Show((await registry.GetAsync(ids[rnd.Next(ids.Count)]))!), r => r.Length);
    await Time("show PREFIX (get)", async () => (await registry.GetAsync(ids[rnd.Next(ids.Count)][..^2]))!, r => 1);
    await Time("export ID (json)", () => registry.ExportAsync(ids[rnd.Next(ids.Count)]), r => r.Length);
    await Time("lineage org/math", () => registry.LineageAsync("org/math"), r => r.UsedBy.Count);
    await Time("begin+update+complete", async () =>
    {
        var b = await registry.BeginAsync(MakeRecord(0, rnd, DateTime.UtcNow) with { Id = string.Empty, Outputs = null, Status = MergeStatus.Running });
        await registry.UpdateAsync(b.Id, r => r with { Tags = ["bench"] });
        var outDir = Path.Combine(folder, "out");
        Directory.CreateDirectory(outDir);
        await File.WriteAllBytesAsync(Path.Combine(outDir, "model.safetensors"), new byte[16]);
        return await registry.CompleteAsync(b.Id, new MergeOutputs { Folder = outDir, Files = [new FileHash("model.safetensors", new string('0', 64), 16)] });
    }, r => 1, repeats: 10);
}
Directory.Delete(folder, recursive: true);
return 0;

static async Task Time<T>(string name, Func<Task<T>> action, Func<T, int> size, int repeats = 20)
{
    var first = await action(); // warm-up (JIT, caches)
    var times = new List<double>();
    for (var i = 0; i < repeats; i++)
    {
        var sw = Stopwatch.StartNew();
        var r = await action();
        sw.Stop();
        times.Add(sw.Elapsed.TotalMilliseconds);
        GC.KeepAlive(r);
    }
    times.Sort();
    Console.WriteLine($"  {name,-30} median {times[times.Count / 2],8:F2} ms   max {times[^1],8:F2} ms   (rows/bytes {size(first)})");
}

MergeRecord MakeRecord(int i, Random rng, DateTime created)
{
    var strategy = strategies[i % strategies.Length];
    var chosen = experts.OrderBy(_ => rng.Next()).Take(3).ToArray();
    string Sha(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)));
    var inputs = new List<ModelInput>
    {
        new() { Name = "base", Reference = "org/base@main", RequestedRevision = "main", ResolvedCommit = Sha("base")[..40], LocalPath = "/cache/org--base/" + Sha("base")[..40], Role = ModelRole.Base,
            Files = [new("model-00001-of-00002.safetensors", Sha("b1"), 4_900_000_000), new("model-00002-of-00002.safetensors", Sha("b2"), 1_200_000_000), new("config.json", Sha("bc"), 700)] },
    };
    if (i % 10 == 5)
    {
        // Every tenth merge re-merges the previous merge's output: lineage chains for the model pages.
        var previous = IdOf(i - 1, created.AddMinutes(-7));
        inputs.Add(new ModelInput { Name = "previous", Reference = "/data/merged/" + previous, LocalPath = "/data/merged/" + previous, Role = ModelRole.Expert });
    }
    inputs.AddRange(chosen.Select(e => new ModelInput
    {
        Name = e, Reference = "org/" + e + "@v" + (i % 4).ToString(CultureInfo.InvariantCulture), RequestedRevision = "v" + (i % 4).ToString(CultureInfo.InvariantCulture),
        ResolvedCommit = Sha(e + (i % 4))[..40], LocalPath = "/cache/org--" + e, Role = ModelRole.Expert,
        Files = [new("model-00001-of-00002.safetensors", Sha(e + "1"), 4_900_000_000), new("model-00002-of-00002.safetensors", Sha(e + "2"), 1_200_000_000), new("config.json", Sha(e + "c"), 700)],
    }));
    double[][] Table(int cols) => [.. chosen.Select(_ => Enumerable.Range(0, cols).Select(_ => rng.NextDouble() * 2).ToArray())];
    var coef = Table(groups.Count);
    var failed = i % 23 == 0;
    var id = IdOf(i, created);
    var plugin = new PluginRef("sensmerging.strategies", strategy, "0.1.0", Sha(strategy), "1.0");
    return new MergeRecord
    {
        Id = id,
        Status = failed ? MergeStatus.Failed : MergeStatus.Succeeded,
        Error = failed ? new MergeError("System.IO.InvalidDataException", "tensor shape mismatch") : null,
        CreatedAt = created, StartedAt = created, FinishedAt = created.AddSeconds(95),
        HostVersion = "0.1.0",
        ConfigText = "merge_method: " + strategy + "\nbase_model: org/base@main\nmodels:\n" + string.Concat(inputs.Skip(1).Select(m => "  - model: " + m.Reference + "\n    parameters: {weight: 1.0, density: 0.6}\n")) + "parameters: {lambda: 1.0}\ndecorators: [{name: sens, parameters: {temperature: 2.0}}]\n",
        ResolvedConfig = "{}",
        Strategy = plugin,
        Decorators = [new DecoratorRef(new PluginRef("sensmerging.sens", "sens", "0.1.0", Sha("sens"), "1.0")) { Parameters = new Dictionary<string, ParameterValue> { ["temperature"] = 2.0 } }],
        Scorers = [new PluginRef("sensmerging.sens", "sensitivity", "0.1.0", Sha("s"), "1.0"), new PluginRef("sensmerging.sens", "logit_alignment", "0.1.0", Sha("l"), "1.0")],
        Inputs = inputs,
        Seed = i,
        Parameters = new Dictionary<string, ParameterValue> { ["lambda"] = 1.0, ["normalize"] = true },
        ModelParameters = chosen.ToDictionary(e => e, e => (IReadOnlyDictionary<string, ParameterValue>)new Dictionary<string, ParameterValue> { ["weight"] = 1.0, ["density"] = 0.6 }),
        ScoreTables = [new ScoreTableRecord("sensitivity", ScorerKind.TaskSpecific, chosen, groups, Table(groups.Count)), new ScoreTableRecord("logit_alignment", ScorerKind.CrossTask, chosen, chosen, Table(3))],
        Coefficients = new CoefficientSet
        {
            Decorator = "sens", Experts = chosen, LayerGroups = groups, Values = coef,
            Tables = [new ScoreTableRecord("alpha", ScorerKind.TaskSpecific, chosen, groups, Table(groups.Count)), new ScoreTableRecord("tau", ScorerKind.CrossTask, chosen, ["tau"], Table(1)), new ScoreTableRecord("sigma", ScorerKind.TaskSpecific, chosen, groups, Table(groups.Count))],
        },
        Outputs = failed ? null : new MergeOutputs
        {
            Folder = "/data/merged/" + id, TensorCount = 291, TotalBytes = 6_100_000_700,
            Files = [new("model-00001-of-00002.safetensors", Sha(id + "1"), 4_900_000_000), new("model-00002-of-00002.safetensors", Sha(id + "2"), 1_200_000_000), new("config.json", Sha(id + "c"), 700)],
        },
        Durations = new Dictionary<string, double> { ["resolve"] = 1.5, ["scoring"] = 40, ["merge"] = 50, ["hashing"] = 3.5, ["total"] = 95 },
        Evaluations = failed ? [] : [new EvaluationResult("/data/merged/" + id, "math", "exact_match", rng.NextDouble(), 100, created.AddMinutes(2))],
        Tags = ["bench", chosen[0] + "-heavy"],
    };
}

static string IdOf(int i, DateTime created) =>
    "m-" + created.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + (i & 0xffffff).ToString("x6", CultureInfo.InvariantCulture);
