using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using SensMerging.Core.Engine;
using SensMerging.Host.Merging;
using SensMerging.Host.Plugins;
using SensMerging.Hub.Client;
using SensMerging.Hub.Server;
using SensMerging.Registry;
using SensMerging.Runtime.Calibration;
using SensMerging.Zoo;
using SensMerging.Zoo.Training;

namespace SensMerging.Host.Demo;

/// <summary>How the demo runs.</summary>
public sealed record DemoOptions
{
    /// <summary>Root folder: the zoo of each seed lives in <c>Root/seed-N</c>, merges and results in <c>Root/demo</c>.</summary>
    public required string Root { get; init; }

    public IReadOnlyList<int> Seeds { get; init; } = [1];

    /// <summary>The zoo's settings: a preset (<see cref="ZooSettings.For"/>) or a settings file.</summary>
    public ZooSettings Zoo { get; init; } = ZooSettings.For(ZooSize.Default);

    /// <summary>The variants of each method to run (names of <see cref="DemoRunner.Variants"/>; "plain" is the method alone).</summary>
    public IReadOnlyList<string> Variants { get; init; } = DemoRunner.Variants.Select(v => v.Label).ToList();

    public IReadOnlyList<string> Methods { get; init; } = ["task_arithmetic", "ties", "dare_ties"];

    public int EvalSamples { get; init; } = 200;

    public int CalibrationSamples { get; init; } = 100;

    public string Device { get; init; } = "cpu";

    /// <summary>
    /// The demo's sens temperature: T = 6 in units of alpha x tau's spread over the experts (<see cref="DefaultTemperatureScale"/>),
    /// chosen on the development sets of tuning seed 101 on zoo X as the setting with the best mean of sens(X) over
    /// task_arithmetic, ties and dare_ties among those where sens(X) is at least X for all three, and kept on the
    /// distilled default zoo as the best mean there (where no setting had sens(X) >= X for all three); never chosen on
    /// the evaluation sets (docs/results.md). The published absolute T = 2 to 6 leaves the coefficients within about 1%
    /// of 1 here.
    /// </summary>
    public const double DefaultTemperature = 6.0;

    /// <summary>The demo's sens reading: <c>alignment</c>, chosen with the temperature on the development sets (docs/results.md).</summary>
    public const string DefaultAlignment = "alignment";

    /// <summary>
    /// The demo's sens temperature scale: <c>spread</c> (the project's scale-free extension), chosen on the development sets;
    /// the decorator itself keeps the published <c>absolute</c> as its default (docs/results.md says why).
    /// </summary>
    public const string DefaultTemperatureScale = "spread";

    /// <summary>The demo's density for ties and dare_ties, chosen on the development sets of the earlier zoo for the plain methods and kept (docs/results.md).</summary>
    public const double DefaultDensity = 0.7;

    /// <summary>
    /// The demo's lambda for task_arithmetic (and dare_linear), chosen for plain task_arithmetic on the development sets of tuning
    /// seed 101 on the default zoo (0.85: 66% retention, over 0.5: 49%, 0.7: 65% and 1.0: 60%, docs/results.md); ties and
    /// dare_ties use 1 with their disjoint mean.
    /// </summary>
    public const double DefaultLambda = 0.85;

    /// <summary>The global lambda of task_arithmetic and dare_linear.</summary>
    public double Lambda { get; init; } = DefaultLambda;

    /// <summary>sens reading of logit alignment: <c>alignment</c> or <c>distance</c>.</summary>
    public string Alignment { get; init; } = DefaultAlignment;

    public double Temperature { get; init; } = DefaultTemperature;

    /// <summary>sens temperature scale: <c>absolute</c> (as published) or <c>spread</c> (the project's extension).</summary>
    public string TemperatureScale { get; init; } = DefaultTemperatureScale;

    /// <summary>The density of the sparsifying methods (ties, dare_ties, ...).</summary>
    public double Density { get; init; } = DefaultDensity;

    /// <summary>The held-out set models are scored on: <see cref="HeldOutSplit.Eval"/> for reported numbers, <see cref="HeldOutSplit.Dev"/> for choosing settings.</summary>
    public HeldOutSplit Split { get; init; } = HeldOutSplit.Eval;
}

/// <summary>A merge variant of the demo: the method alone, or decorated by sens with one or both of its scalings.</summary>
/// <param name="Name">Empty for the method alone, else the prefix of the row label.</param>
public sealed record DemoVariant(string Name, bool Sens, bool TaskScaling, bool CrossScaling)
{
    /// <summary>The name used on the command line: <c>plain</c> for the method alone.</summary>
    public string Label => Name == "" ? "plain" : Name;
}

/// <summary>One row of the results table.</summary>
public sealed record DemoRow(string Method, string Variant, IReadOnlyList<ModelScores> PerSeed, IReadOnlyList<string> RecordIds)
{
    public string Label => Variant == "" ? Method : $"{Variant}({Method})";

    public double MeanOf(Func<ModelScores, double> metric) => PerSeed.Select(metric).Average();

    public double SpreadOf(Func<ModelScores, double> metric) => SampleSpread(PerSeed.Select(metric).ToList());

    /// <summary>The sample standard deviation of <paramref name="values"/> (0 for fewer than two).</summary>
    public static double SampleSpread(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count < 2)
        {
            return 0;
        }
        var mean = values.Average();
        return Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
    }
}

/// <summary>
/// The main job on embedded defaults: build (or reuse) the zoo, serve it from the project's Hub server on loopback, pull
/// the models through the Hub client, merge with each method with and without sens (and the two ablations), evaluate
/// every model on every task, record everything in the registry, and report the table and plots.
/// </summary>
public sealed partial class DemoRunner
{
    /// <summary>The variants of each method: plain, sens, and sens with only one of its two scalings.</summary>
    public static readonly DemoVariant[] Variants =
    [
        new("", Sens: false, TaskScaling: false, CrossScaling: false),
        new("sens", Sens: true, TaskScaling: true, CrossScaling: true),
        new("sens-task", Sens: true, TaskScaling: true, CrossScaling: false),
        new("sens-cross", Sens: true, TaskScaling: false, CrossScaling: true),
    ];

    private readonly IServiceProvider _services;
    private readonly ILogger<DemoRunner> _logger;

    public DemoRunner(IServiceProvider services, ILogger<DemoRunner> logger)
    {
        _services = services;
        _logger = logger;
    }

    public async Task<IReadOnlyList<DemoRow>> RunAsync(DemoOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var rows = new Dictionary<string, (string Method, string Variant, List<ModelScores> Scores, List<string> Ids)>(StringComparer.Ordinal);
        IReadOnlyList<string> tasks = [];
        string? coefficientRecord = null;
        foreach (var seed in options.Seeds)
        {
            var (seedTasks, seedRows) = await RunSeedAsync(options, seed, cancellationToken);
            tasks = seedTasks;
            foreach (var (method, variant, scores, id) in seedRows)
            {
                var key = method + "|" + variant;
                if (!rows.TryGetValue(key, out var row))
                {
                    rows[key] = row = (method, variant, [], []);
                }
                row.Scores.Add(scores);
                if (id is not null)
                {
                    row.Ids.Add(id);
                    if (variant == "sens" && (coefficientRecord is null || method == "ties"))
                    {
                        coefficientRecord = id;
                    }
                }
            }
        }
        var result = rows.Values.Select(r => new DemoRow(r.Method, r.Variant, r.Scores, r.Ids)).ToList();
        await WriteReportAsync(options, tasks, result, coefficientRecord, cancellationToken);
        return result;
    }

    private async Task<(IReadOnlyList<string> Tasks, List<(string Method, string Variant, ModelScores Scores, string? RecordId)> Rows)> RunSeedAsync(
        DemoOptions options, int seed, CancellationToken cancellationToken)
    {
        var zooRoot = Path.Combine(options.Root, $"seed-{seed}");
        LogStage("zoo", $"building or reusing the {options.Zoo.Size} zoo in {zooRoot}");
        var zoo = await new ZooBuilder(_services.GetRequiredService<ILogger<ZooBuilder>>())
            .BuildAsync(zooRoot, seed, options.Zoo, new Progress<ZooProgress>(p => ZooProgressLog(p)), cancellationToken);
        var tasks = zoo.Tasks;

        await using var server = await HubServer.StartAsync(new FolderRepositorySource(zoo.Layout.ReposRoot), cancellationToken: cancellationToken);
        LogStage("hub", $"serving {zoo.Layout.ReposRoot} on {server.Endpoint}");
        // The host's Hub settings (HF_* variables, then --set Hub:...), pointed at this seed's server.
        var hubOptions = _services.GetRequiredService<HubOptions>().Clone();
        hubOptions.Endpoint = server.Endpoint;
        hubOptions.Offline = false;
        if (Environment.GetEnvironmentVariable("HF_HUB_CACHE") is null && Environment.GetEnvironmentVariable("HF_HOME") is null)
        {
            // One cache per seed: every seed's zoo serves the same repository names (zoo/base, zoo/math, ...) with other
            // content, so a shared cache would re-point refs/main at each seed's pull.
            hubOptions.CacheDirectory = Path.Combine(options.Root, "hf-cache", $"seed-{seed}");
        }
        await using var hubServices = new ServiceCollection()
            .AddSingleton(_services.GetRequiredService<ILoggerFactory>())
            .AddLogging()
            .AddHubClient(hubOptions)
            .BuildServiceProvider();
        var hub = hubServices.GetRequiredService<HubCache>();
        foreach (var model in zoo.Manifest.Models)
        {
            var pulled = await hub.PullAsync(ZooLayout.RepoId(model.Name), "main", cancellationToken: cancellationToken);
            LogStage("hub", $"pulled {pulled.RepoId} -> {pulled.Commit[..12]} ({pulled.BytesDownloaded} bytes downloaded, cache {hub.CacheDirectory})");
        }

        var pipeline = new MergePipeline(
            _services.GetRequiredService<PluginCatalog>(), new HostModelResolver(hub), _services.GetRequiredService<IMergeRegistry>(),
            _services.GetRequiredService<IModelRuntime>(), _services.GetRequiredService<CalibrationLoader>(), _services.GetRequiredService<MergeEngine>(),
            _services.GetRequiredService<ScoreCache>(), _services.GetRequiredService<ILoggerFactory>());
        var work = Path.Combine(options.Root, "demo", $"seed-{seed}");
        Directory.CreateDirectory(Path.Combine(work, "configs"));
        var merged = new List<(string Method, string Variant, string Output, string RecordId)>();
        foreach (var method in options.Methods)
        {
            foreach (var variant in Variants.Where(v => options.Variants.Contains(v.Label)))
            {
                var name = variant.Name == "" ? method : $"{method}-{variant.Name}";
                var configPath = Path.Combine(work, "configs", name + ".yaml");
                await File.WriteAllTextAsync(configPath, Config(zoo, method, variant, seed, options), cancellationToken);
                var output = Path.Combine(work, "merged", name);
                var outcome = await pipeline.RunAsync(new MergeRunRequest
                {
                    ConfigPath = configPath,
                    OutputPath = output,
                    Device = options.Device,
                    Overwrite = true,
                    Tags = ["demo", $"seed:{seed}"],
                }, null, cancellationToken);
                LogStage("merge", $"{name}: {outcome.Result.TensorCount} tensors, record {outcome.RecordId}");
                merged.Add((method, variant.Name, output, outcome.RecordId));
            }
        }

        var models = new List<(string Name, string Path)> { ("base", zoo.ModelPath(ZooLayout.BaseName)) };
        models.AddRange(zoo.Experts.Select(e => ($"expert:{e}", zoo.ModelPath(e))));
        models.AddRange(merged.Select(m => (m.Variant == "" ? m.Method : $"{m.Variant}({m.Method})", m.Output)));
        LogStage("eval", $"{models.Count} models x {tasks.Count} tasks, {options.EvalSamples} {options.Split.ToString().ToLowerInvariant()} samples each");
        var grid = await ZooDatasets.EvaluationGridAsync(zoo.Layout, models, tasks, options.EvalSamples, zoo.Manifest.Settings.MaxLength, cancellationToken, options.Split);
        var scores = await _services.GetRequiredService<ModelEvaluator>().EvaluateAsync(grid, options.Device, options.EvalSamples, cancellationToken);
        var registry = _services.GetRequiredService<IMergeRegistry>();
        var rows = new List<(string, string, ModelScores, string?)>();
        foreach (var score in scores)
        {
            var m = merged.FirstOrDefault(x => (x.Variant == "" ? x.Method : $"{x.Variant}({x.Method})") == score.Model);
            if (m.RecordId is not null)
            {
                // Development-set scores are recorded under their own metric names, never mixed with reported ones.
                var suffix = options.Split == HeldOutSplit.Dev ? "@dev" : "";
                foreach (var task in tasks)
                {
                    await registry.AddEvaluationAsync(m.RecordId, new EvaluationResult(score.Model, task, ModelEvaluator.ExactMatch + suffix, score.ExactMatch[task], options.EvalSamples, DateTime.UtcNow), cancellationToken);
                    await registry.AddEvaluationAsync(m.RecordId, new EvaluationResult(score.Model, task, ModelEvaluator.Perplexity + suffix, score.Perplexity[task], options.EvalSamples, DateTime.UtcNow), cancellationToken);
                }
                rows.Add((m.Method, m.Variant, score, m.RecordId));
            }
            else
            {
                rows.Add((score.Model, "", score, null));
            }
        }
        return (tasks, rows);
    }

    private static string Config(ZooBuildResult zoo, string method, DemoVariant variant, int seed, DemoOptions options)
    {
        var inv = CultureInfo.InvariantCulture;
        var methodParameters = method switch
        {
            "ties" or "dare_ties" or "dare_linear" or "breadcrumbs" or "breadcrumbs_ties" => $"weight: 1.0, density: {options.Density.ToString(inv)}",
            _ => "weight: 1.0",
        };
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"name: demo {(variant.Name == "" ? method : $"{variant.Name}({method})")} seed {seed}");
        sb.AppendLine(inv, $"merge_method: {method}");
        sb.AppendLine(inv, $"base_model: {ZooLayout.RepoId(ZooLayout.BaseName)}@main");
        sb.AppendLine("models:");
        foreach (var expert in zoo.Experts)
        {
            var task = zoo.Manifest.Models.Single(m => m.Name == expert).Task!;
            sb.AppendLine(inv, $"  - model: {ZooLayout.RepoId(expert)}@main");
            sb.AppendLine(inv, $"    parameters: {{{methodParameters}}}");
            sb.AppendLine(inv, $"    calibration: {{path: {zoo.Layout.CalibrationPath(task)}, samples: {options.CalibrationSamples}, max_length: {zoo.Manifest.Settings.MaxLength}}}");
        }
        // The summing methods take the demo's lambda; the disjoint-mean methods (ties family) keep 1.
        sb.AppendLine("parameters:");
        sb.AppendLine(inv, $"  lambda: {(method == "task_arithmetic" || method == "dare_linear" ? options.Lambda : 1.0).ToString(inv)}");
        if (method == "dare_ties")
        {
            // Like TIES, divide each entry by the weights that agree with the elected sign (TIES's disjoint mean); mergekit
            // leaves that off by default for dare_ties, which with unit weights sums three rescaled task vectors.
            sb.AppendLine("  normalize: true");
        }
        sb.AppendLine(inv, $"seed: {seed}");
        if (variant.Sens)
        {
            sb.AppendLine("decorators:");
            sb.AppendLine("  - name: sens");
            sb.AppendLine(inv, $"    parameters: {{temperature: {options.Temperature.ToString(inv)}, temperature_scale: {options.TemperatureScale}, alignment: {options.Alignment}, task_scaling: {(variant.TaskScaling ? "true" : "false")}, cross_scaling: {(variant.CrossScaling ? "true" : "false")}}}");
        }
        return sb.ToString();
    }

    private async Task WriteReportAsync(DemoOptions options, IReadOnlyList<string> tasks, IReadOnlyList<DemoRow> rows, string? coefficientRecord, CancellationToken cancellationToken)
    {
        var folder = Path.Combine(options.Root, "demo");
        Directory.CreateDirectory(folder);
        var markdown = DemoReport.Markdown(options, tasks, rows);
        await File.WriteAllTextAsync(Path.Combine(folder, "results.md"), markdown, cancellationToken);
        await File.WriteAllTextAsync(Path.Combine(folder, "results.json"), JsonSerializer.Serialize(new
        {
            options.Seeds, Size = options.Zoo.Size, Zoo = options.Zoo, Split = options.Split.ToString().ToLowerInvariant(), options.Methods, options.EvalSamples, options.CalibrationSamples, options.Temperature, options.TemperatureScale, options.Alignment, options.Density, options.Lambda,
            Tasks = tasks,
            Rows = rows.Select(r => new { r.Label, r.Method, r.Variant, r.RecordIds, r.PerSeed }),
        }, JsonOutput.Options), cancellationToken);
        DemoReport.WriteTablePng(tasks, rows, Path.Combine(folder, "results.png"));
        if (coefficientRecord is not null && await _services.GetRequiredService<IMergeRegistry>().GetAsync(coefficientRecord, cancellationToken) is { } record)
        {
            CoefficientPlot.Write(record, Path.Combine(folder, "coefficients.png"));
        }
        LogStage("report", $"{Path.Combine(folder, "results.md")}, results.png, coefficients.png");
    }

    private void ZooProgressLog(ZooProgress p)
    {
        if (p.TotalSteps > 0 && (p.Step == p.TotalSteps || p.Step % Math.Max(1, p.TotalSteps / 4) == 0))
        {
            LogTraining(p.Stage, p.Model, p.Step, p.TotalSteps, p.Loss);
        }
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "demo {Stage}: {Message}")]
    private partial void LogStage(string stage, string message);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "zoo {Stage} {Model}: step {Step}/{Total}, loss {Loss:F3}")]
    private partial void LogTraining(string stage, string model, int step, int total, double loss);
}
