using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Host.Plugins;
using SensMerging.Registry;
using SensMerging.Runtime.Calibration;
using RegistryValue = SensMerging.Registry.ParameterValue;

namespace SensMerging.Host.Merging;

/// <summary>What the user asked for on the command line, on top of the config.</summary>
public sealed record MergeRunRequest
{
    public required string ConfigPath { get; init; }

    public required string OutputPath { get; init; }

    public string Device { get; init; } = "cpu";

    /// <summary>Overrides the config's seed.</summary>
    public long? Seed { get; init; }

    public long ShardSizeBytes { get; init; } = MergeOptions.DefaultShardSizeBytes;

    /// <summary>Overrides the config's out_dtype.</summary>
    public string? OutputDType { get; init; }

    /// <summary>The value <c>--compute-dtype</c> accepts (and the registry records) for <see cref="ComputeInFloat32"/>.</summary>
    public const string Float32Compute = "float32";

    /// <summary>
    /// Compute in float32 and round once instead of reproducing mergekit's per-operation rounding when the config's
    /// dtype is half precision (<see cref="Core.Engine.MergePlan.ComputeInFloat32"/>).
    /// </summary>
    public bool ComputeInFloat32 { get; init; }

    public bool Overwrite { get; init; }

    /// <summary>Problems in the input data (NaN/Inf values, tensors the base lacks) fail the merge instead of being recorded as warnings.</summary>
    public bool Strict { get; init; }

    /// <summary>Tags stored with the registry record.</summary>
    public IReadOnlyList<string> Tags { get; init; } = [];
}

/// <summary>A finished merge: its registry record id, what the engine produced, and what the decorators computed.</summary>
public sealed record MergeRunOutcome(string RecordId, MergeResult Result, IReadOnlyList<DecoratorReport> Reports);

/// <summary>Decorators prepared for a merge (or for <c>sensmerge scores</c>): the wrapped strategy and the reports.</summary>
public sealed record PreparedStrategy(IMergeStrategy Strategy, IReadOnlyList<DecoratorReport> Reports, IReadOnlyList<string> ScorersUsed)
{
    /// <summary>The tables the scorers returned to the decorators, in the order they were asked for.</summary>
    public IReadOnlyList<ScoreTable> ScorerTables { get; init; } = [];
}

/// <summary>
/// One merge from config to registry record: resolve models (Hub or local), pick the strategy plugin, record the merge
/// as running, let the decorators score and wrap the strategy, stream the tensors, and complete the record only once the
/// output is complete and hashed. Failures and cancellation mark the record and leave no output behind.
/// </summary>
public sealed partial class MergePipeline
{
    private readonly PluginCatalog _plugins;
    private readonly HostModelResolver _resolver;
    private readonly IMergeRegistry _registry;
    private readonly IModelRuntime _runtime;
    private readonly CalibrationLoader _calibration;
    private readonly MergeEngine _engine;
    private readonly ScoreCache _scoreCache;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger<MergePipeline> _logger;
    private readonly OutputFolderGuard _outputGuard;

    public MergePipeline(
        PluginCatalog plugins, HostModelResolver resolver, IMergeRegistry registry, IModelRuntime runtime,
        CalibrationLoader calibration, MergeEngine engine, ScoreCache scoreCache, ILoggerFactory loggerFactory)
    {
        _plugins = plugins;
        _resolver = resolver;
        _registry = registry;
        _runtime = runtime;
        _calibration = calibration;
        _engine = engine;
        _scoreCache = scoreCache;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<MergePipeline>();
        // A shared registry lives on its server: no local folder of it to protect.
        _outputGuard = new OutputFolderGuard(resolver.CacheDirectory, SensMerging.Registry.Remote.RemoteMergeRegistry.IsRemote(registry.FilePath) ? null : registry.FilePath);
    }

    public static string HostVersion { get; } =
        typeof(MergePipeline).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    public async Task<MergeRunOutcome> RunAsync(MergeRunRequest request, IProgress<MergeProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var total = Stopwatch.StartNew();
        var configText = await File.ReadAllTextAsync(request.ConfigPath, cancellationToken);
        var config = await MergeConfigParser.LoadAsync(request.ConfigPath, cancellationToken);
        var strategy = _plugins.GetStrategy(config.MergeMethod);
        foreach (var decorator in config.Decorators)
        {
            _plugins.GetDecorator(decorator.Name); // unknown decorators fail before anything is resolved or recorded
        }
        RefuseDecoratorsOnLora(config);
        if (config.Slices is not null && config.Decorators.Count > 0)
        {
            throw new MergeConfigException(config.SourcePath, [
                "decorators on a config of several slices are not supported yet: a frankenmerge's layers come from different "
                + "models and positions, and the scorers would have to map each output layer back to its sources"]);
        }
        // Before any pull, hash or record: the output folder may not overlap an input, the config, the Hub cache or the
        // registry; no other merge may be writing it; it must be absent or empty unless overwriting. Held to the end.
        using var outputClaim = _outputGuard.Claim(request.OutputPath, request.Overwrite, config);
        var workPath = MergedModelWriter.NewWorkPath(request.OutputPath);

        var resolveWatch = Stopwatch.StartNew();
        using var inputs = await ResolveInputsAsync(config, strategy, cancellationToken);
        var layerCount = inputs.LayerCount;
        // A multi-slice config plans each output tensor from its slice (every parameter resolved on the way); any other
        // reads every tensor of the reference model under its own name from every input.
        ParameterResolver? parameters = null;
        IReadOnlyList<PlannedTensor>? layout = null;
        if (config.Slices is not null)
        {
            var experts = config.Experts(strategy.Traits.RequiresBaseModel).ToList();
            layout = SliceLayout.Plan(config, strategy, reference =>
                config.BaseModel is { } b && reference.SameModelAs(b) && inputs.Base is { } baseInput
                    ? baseInput
                    : inputs.Experts[experts.FindIndex(m => m.Model.SameModelAs(reference))]);
        }
        else
        {
            parameters = ParameterResolver.For(config, strategy);
            ParameterResolver.Validate(config, strategy, inputs.TensorNames, layerCount);
        }
        var inputRecords = await DescribeInputsAsync(inputs, _resolver, cancellationToken);
        resolveWatch.Stop();

        var seed = request.Seed ?? config.Seed ?? 0;
        var draft = new MergeRecord
        {
            HostVersion = HostVersion,
            ConfigText = configText,
            ConfigPath = Path.GetFullPath(request.ConfigPath),
            ResolvedConfig = ResolvedConfigText(config, inputs, seed),
            Strategy = PluginRefOf(ComponentKind.Strategy, strategy.Name),
            Decorators = [.. config.Decorators.Select(d => new DecoratorRef(PluginRefOf(ComponentKind.Decorator, d.Name))
            {
                Parameters = d.Parameters.ToDictionary(kv => kv.Key, kv => RegistryValue.FromObject(kv.Value), StringComparer.Ordinal),
            })],
            Inputs = inputRecords,
            Seed = seed,
            Dtype = config.Dtype,
            OutDtype = request.OutputDType ?? config.OutDtype,
            ComputeDtype = request.ComputeInFloat32 ? MergeRunRequest.Float32Compute : null,
            Parameters = config.Parameters.ToDictionary(kv => kv.Key, kv => Recorded(kv.Value), StringComparer.Ordinal),
            ModelParameters = config.Models.ToDictionary(
                m => m.Model.Text,
                m => (IReadOnlyDictionary<string, RegistryValue>)m.Parameters.ToDictionary(kv => kv.Key, kv => Recorded(kv.Value), StringComparer.Ordinal),
                StringComparer.Ordinal),
            Tags = request.Tags,
            PartialFolder = workPath,
        };
        var record = await _registry.BeginAsync(draft, cancellationToken);
        LogStarted(record.Id, strategy.Name, inputs.Experts.Count);
        var durations = new Dictionary<string, double> { [Phases.Resolve] = resolveWatch.Elapsed.TotalSeconds };
        try
        {
            var scoringWatch = Stopwatch.StartNew();
            var prepared = await PrepareAsync(config, strategy, inputs, request.Device, cancellationToken);
            durations[Phases.Scoring] = scoringWatch.Elapsed.TotalSeconds;
            if (prepared.Reports.Count > 0)
            {
                await _registry.UpdateAsync(record.Id, r => WithReports(r, prepared), cancellationToken);
            }

            var outDType = request.OutputDType ?? config.OutDtype;
            var plan = new MergePlan
            {
                Base = layout is null ? inputs.Base : null,
                Models = inputs.Experts,
                Strategy = prepared.Strategy,
                ParameterResolver = parameters is null ? null : (tensor, _) => parameters.Resolve(tensor, layerCount),
                WeightOverride = parameters is null ? null : (tensor, _) => parameters.Weights(tensor, layerCount),
                Layout = layout,
                CastDType = config.Dtype is null ? null : SafeTensorsDType.Parse(config.Dtype),
                OutputDType = outDType is null ? null : SafeTensorsDType.Parse(outDType),
                ComputeInFloat32 = request.ComputeInFloat32,
                Seed = seed,
            };
            var options = new MergeOptions
            {
                OutputPath = Path.GetFullPath(request.OutputPath),
                Overwrite = request.Overwrite,
                WorkPath = workPath,
                Strict = request.Strict,
                ShardSizeBytes = request.ShardSizeBytes,
                Device = request.Device,
                TokenizerSource = inputs.TokenizerFolder,
                Card = Card(config, record.Id, prepared, inputs, seed),
            };
            var result = await _engine.RunAsync(plan, options, progress, cancellationToken);
            durations[Phases.Merge] = result.MergeDuration.TotalSeconds;
            durations[Phases.Total] = total.Elapsed.TotalSeconds;
            if (result.Warnings.Count > 0)
            {
                await _registry.UpdateAsync(record.Id, r => r with { Warnings = RecordedWarnings.From(result.Warnings) }, CancellationToken.None);
            }
            await _registry.CompleteAsync(record.Id, new MergeOutputs
            {
                Folder = result.OutputPath,
                Files = [.. result.Files.Select(f => new FileHash(f.RelativePath, f.Sha256, f.Size))],
                TotalBytes = result.TotalBytes,
                TensorCount = result.TensorCount,
            }, durations, CancellationToken.None);
            LogFinished(record.Id, result.OutputPath, result.TensorCount, total.Elapsed.TotalSeconds);
            return new MergeRunOutcome(record.Id, result, prepared.Reports);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            durations[Phases.Total] = total.Elapsed.TotalSeconds;
            await _registry.CancelAsync(record.Id, "cancelled by the user", durations, CancellationToken.None);
            throw;
        }
        catch (Exception ex)
        {
            durations[Phases.Total] = total.Elapsed.TotalSeconds;
            if (ex is MergeDataException { Warnings.Count: > 0 } data)
            {
                await _registry.UpdateAsync(record.Id, r => r with { Warnings = RecordedWarnings.From(data.Warnings) }, CancellationToken.None);
            }
            await _registry.FailAsync(record.Id, ex, durations, CancellationToken.None);
            throw;
        }
    }

    /// <summary>Runs the config's decorators (and so their scorers) without merging: <c>sensmerge scores</c>.</summary>
    public async Task<PreparedStrategy> ScoreAsync(string configPath, string device, CancellationToken cancellationToken)
    {
        var config = await MergeConfigParser.LoadAsync(configPath, cancellationToken);
        var strategy = _plugins.GetStrategy(config.MergeMethod);
        RefuseDecoratorsOnLora(config);
        if (config.Decorators.Count == 0)
        {
            throw new InvalidOperationException($"{configPath} has no decorators: there is nothing to score (add e.g. decorators: [{{name: sens}}])");
        }
        using var inputs = await ResolveInputsAsync(config, strategy, cancellationToken);
        return await PrepareAsync(config, strategy, inputs, device, cancellationToken);
    }

    private async Task<PreparedStrategy> PrepareAsync(MergeConfig config, IMergeStrategy strategy, ResolvedInputs inputs, string device, CancellationToken cancellationToken)
    {
        var reports = new List<DecoratorReport>();
        var scorers = new ScorerCatalog(_plugins, _scoreCache);
        if (config.Decorators.Count == 0)
        {
            return new PreparedStrategy(strategy, reports, []);
        }
        var experts = await ScoredExpertsAsync(config, inputs, strategy.Traits.RequiresBaseModel, cancellationToken);
        var baseModel = inputs.Base is null ? null : new ScoredModel(inputs.BaseName!, inputs.Base.Folder.Path, null);
        foreach (var decoratorConfig in config.Decorators)
        {
            var decorator = _plugins.GetDecorator(decoratorConfig.Name);
            var context = new DecoratorContext
            {
                Experts = experts,
                Base = baseModel,
                LayerGroups = inputs.LayerGroups,
                Parameters = ParameterResolver.ResolveComponent(decorator.Name, decoratorConfig.Parameters, decorator.Parameters),
                Scorers = scorers,
                Runtime = _runtime,
                Logger = _loggerFactory.CreateLogger("SensMerging.Decorator." + decorator.Name),
                Device = device,
            };
            var decorated = await decorator.DecorateAsync(strategy, context, cancellationToken);
            reports.Add(decorated.Report);
            strategy = decorated;
        }
        return new PreparedStrategy(strategy, reports, [.. scorers.Used]) { ScorerTables = scorers.Tables };
    }

    private async Task<IReadOnlyList<ScoredModel>> ScoredExpertsAsync(MergeConfig config, ResolvedInputs inputs, bool requiresBase, CancellationToken cancellationToken)
    {
        var result = new List<ScoredModel>();
        var experts = config.Experts(requiresBase);
        for (var i = 0; i < experts.Count; i++)
        {
            TextDataset? data = null;
            if (experts[i].Calibration is { } source)
            {
                var loaded = await _calibration.LoadAsync(source.Path, source.SamplesOrDefault, source.MaxLengthOrDefault, inputs.Experts[i].Name, cancellationToken);
                data = loaded.Dataset;
            }
            result.Add(new ScoredModel(inputs.Experts[i].Name, inputs.Experts[i].Folder.Path, data));
        }
        return result;
    }

    /// <summary>Decorators' scorers run models on the runtime, which loads folders as they are: a LoRA adapter would be ignored.</summary>
    private static void RefuseDecoratorsOnLora(MergeConfig config)
    {
        if (config.Decorators.Count > 0 && config.ReferencedModels().FirstOrDefault(m => m.Lora is not null) is { } lora)
        {
            throw new MergeConfigException(config.SourcePath, [
                $"decorators on a config with a LoRA reference ('{lora.Text}') are not supported yet: the scorers load model folders "
                + "without the adapter; merge the adapter into a folder first"]);
        }
    }

    private async Task<ResolvedInputs> ResolveInputsAsync(MergeConfig config, IMergeStrategy strategy, CancellationToken cancellationToken)
    {
        var resolved = new Dictionary<ModelReference, ResolvedModel>();
        foreach (var reference in config.ReferencedModels())
        {
            resolved[reference] = await _resolver.ResolveAsync(reference, cancellationToken);
        }
        ResolvedModel Find(ModelReference r) => resolved.First(kv => kv.Key.SameModelAs(r)).Value;
        static ModelFolder Open(ResolvedModel r) => ModelFolder.Open(r.LocalPath, r.Adapter?.LocalPath);

        var inputs = new ResolvedInputs { Resolved = [.. resolved.Values] };
        try
        {
            if (config.BaseModel is not null)
            {
                inputs.BaseName = config.BaseModel.Text;
                inputs.Base = new MergeInput(config.BaseModel.Text, Open(Find(config.BaseModel)));
            }
            foreach (var expert in config.Experts(strategy.Traits.RequiresBaseModel))
            {
                inputs.ExpertList.Add(new MergeInput(expert.Model.Text, Open(Find(expert.Model))));
            }
            var reference = inputs.Base?.Folder ?? inputs.ExpertList.FirstOrDefault()?.Folder
                ?? throw new MergeValidationException("the config lists no models to merge");
            inputs.TensorNames = [.. reference.Tensors.Select(t => t.Name)];
            inputs.LayerCount = reference.Config?.NumHiddenLayers
                ?? (inputs.TensorNames.Select(LayerGroups.BlockIndex).DefaultIfEmpty(-1).Max() + 1);
            inputs.LayerGroups = [.. inputs.TensorNames.Select(LayerGroups.Of).Distinct(StringComparer.Ordinal).OrderBy(LayerGroups.SortKey)];
            inputs.TokenizerFolder = config.TokenizerSource switch
            {
                { Kind: TokenizerSourceKind.Model, Model: { } m } => Find(m).LocalPath,
                _ => reference.Path,
            };
            return inputs;
        }
        catch
        {
            inputs.Dispose();
            throw;
        }
    }

    /// <summary>The registry's view of the inputs: files with the size and SHA-256 of what the merge reads (<see cref="FileHashing"/>).</summary>
    private static async Task<IReadOnlyList<ModelInput>> DescribeInputsAsync(ResolvedInputs inputs, HostModelResolver resolver, CancellationToken cancellationToken)
    {
        var records = new List<ModelInput>();
        foreach (var model in inputs.Resolved)
        {
            var isBase = inputs.Base is not null && string.Equals(inputs.BaseName, model.Reference.Text, StringComparison.Ordinal);
            // A model+adapter reference is two inputs: the model (named by the whole reference) and its adapter, each with
            // its own reference text, commit and files, so reproduce pins both sides of the '+'.
            foreach (var (part, name) in model.Adapter is { } adapter
                ? new[] { (model with { Reference = model.Reference.WithoutLora() }, model.Reference.Text), (adapter, model.Reference.Text + " (LoRA adapter)") }
                : [(model, model.Reference.Text)])
            {
                records.Add(new ModelInput
                {
                    Name = name,
                    Reference = part.Reference.Text,
                    RequestedRevision = part.Reference.Revision,
                    ResolvedCommit = part.Commit,
                    LocalPath = part.LocalPath,
                    Role = isBase ? ModelRole.Base : ModelRole.Expert,
                    Files = await FileHashing.DescribeAsync(part.LocalPath, resolver.VerifiedSha256(part.LocalPath), cancellationToken),
                });
            }
        }
        return records;
    }

    private PluginRef PluginRefOf(ComponentKind kind, string name)
    {
        var plugin = _plugins.PluginOf(kind, name);
        return new PluginRef(plugin.Id, name, plugin.Version ?? "", plugin.AssemblySha256 ?? "", plugin.ContractVersion ?? "");
    }

    /// <summary>
    /// Scores and coefficients, each table once: <c>scoreTables</c> holds what the scorers returned (under the scorers' names,
    /// with their details) and the tables of decorators that set no coefficients; the coefficients' decorator's own tables
    /// (alpha, tau, sigma...) go with the coefficients, and a table a decorator only renamed from a scorer's is not repeated.
    /// </summary>
    private MergeRecord WithReports(MergeRecord record, PreparedStrategy prepared)
    {
        var coefficients = prepared.Reports
            .Select(r => (Report: r, Table: r.Tables.FirstOrDefault(t => t.Scorer == "coefficients")))
            .LastOrDefault(x => x.Table is not null);
        var scorerTables = prepared.ScorerTables.Distinct().Select(ScoreTableRecord.From).ToList();
        var tables = new List<ScoreTableRecord>(scorerTables);
        var intermediates = new List<ScoreTableRecord>();
        foreach (var report in prepared.Reports)
        {
            foreach (var table in report.Tables.Where(t => !ReferenceEquals(t, coefficients.Table)))
            {
                var stored = ScoreTableRecord.From(table);
                if (!scorerTables.Any(stored.SameNumbers))
                {
                    (ReferenceEquals(report, coefficients.Report) ? intermediates : tables).Add(stored);
                }
            }
        }
        return record with
        {
            ScoreTables = tables,
            Scorers = [.. prepared.ScorersUsed.Select(s => PluginRefOf(ComponentKind.Scorer, s))],
            Coefficients = coefficients.Table is null ? null : new CoefficientSet
            {
                Decorator = coefficients.Report.Decorator,
                Experts = coefficients.Table.Rows,
                LayerGroups = coefficients.Table.Columns,
                Values = coefficients.Table.Values,
                Tables = intermediates,
            },
            DecoratorSettings = prepared.Reports.ToDictionary(
                r => r.Decorator,
                r => (IReadOnlyDictionary<string, RegistryValue>)r.Settings.ToDictionary(kv => kv.Key, kv => RegistryValue.FromObject(kv.Value), StringComparer.Ordinal),
                StringComparer.Ordinal),
        };
    }

    /// <summary>A config parameter as the registry stores it: scalars as values, gradients as lists, filters as lists of {filter, value}.</summary>
    private static RegistryValue Recorded(SensMerging.Core.Config.ParameterValue value) => value switch
    {
        ScalarParameter s => RegistryValue.FromObject(s.Value),
        GradientParameter g => RegistryValue.Of(g.Values.Select(RegistryValue.FromObject)),
        FilteredParameter f => RegistryValue.Of(f.Entries.Select(e => RegistryValue.Of(new Dictionary<string, RegistryValue>
        {
            ["filter"] = e.Filter is null ? RegistryValue.Null : RegistryValue.Of(e.Filter),
            ["value"] = Recorded(e.Value),
        }))),
        _ => RegistryValue.Of(value.ToString() ?? string.Empty),
    };

    private static string ResolvedConfigText(MergeConfig config, ResolvedInputs inputs, long seed)
    {
        var lines = new List<string>
        {
            $"merge_method: {config.MergeMethod}",
            $"seed: {seed.ToString(CultureInfo.InvariantCulture)}",
        };
        if (config.BaseModel is not null)
        {
            lines.Add($"base_model: {Pinned(config.BaseModel, inputs)}");
        }
        lines.Add("models:");
        lines.AddRange(config.Models.Select(m => $"  - model: {Pinned(m.Model, inputs)}"));
        return string.Join('\n', lines) + "\n";
    }

    private static string Pinned(ModelReference reference, ResolvedInputs inputs)
    {
        var resolved = inputs.Resolved.First(r => r.Reference.SameModelAs(reference));
        var model = resolved.Commit is null ? resolved.LocalPath : $"{reference.Repo}@{resolved.Commit}";
        return resolved.Adapter is not { } adapter ? model
            : model + "+" + (adapter.Commit is null ? adapter.LocalPath : $"{adapter.Reference.Repo}@{adapter.Commit}");
    }

    private static ModelCard Card(MergeConfig config, string recordId, PreparedStrategy prepared, ResolvedInputs inputs, long seed)
    {
        var inputsList = new List<ModelCardInput>();
        if (inputs.Base is not null)
        {
            inputsList.Add(new ModelCardInput(Pinned(config.BaseModel!, inputs), "base"));
        }
        inputsList.AddRange(inputs.Experts.Select(e => new ModelCardInput(Pinned(inputs.Resolved.First(r => r.Reference.Text == e.Name).Reference, inputs), "expert")));
        var parameters = config.Parameters.Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value.ToString() ?? "")).ToList();
        parameters.Add(new("seed", seed.ToString(CultureInfo.InvariantCulture)));
        var body = $"Registry record: `{recordId}` (`sensmerge registry show {recordId}`).\n";
        foreach (var report in prepared.Reports)
        {
            body += $"\nDecorator `{report.Decorator}`: " + string.Join(", ", report.Settings.Select(kv => $"{kv.Key}={Convert.ToString(kv.Value, CultureInfo.InvariantCulture)}")) + "\n";
        }
        return new ModelCard
        {
            Title = config.Name ?? $"{prepared.Strategy.Name} merge",
            Method = prepared.Strategy.Name,
            Inputs = inputsList,
            Parameters = parameters,
            BodyMarkdown = body,
            Tags = ["merge", "sensmerging", config.MergeMethod, $"sensmerge-registry:{recordId}"],
        };
    }

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "Merge {RecordId} started: {Strategy} over {ExpertCount} expert(s)")]
    private partial void LogStarted(string recordId, string strategy, int expertCount);

    [LoggerMessage(EventId = 201, Level = LogLevel.Information, Message = "Merge {RecordId} finished: {Output} ({TensorCount} tensors, {Seconds:F1} s)")]
    private partial void LogFinished(string recordId, string output, int tensorCount, double seconds);

    /// <summary>The opened input folders of one merge.</summary>
    private sealed class ResolvedInputs : IDisposable
    {
        public IReadOnlyList<ResolvedModel> Resolved { get; init; } = [];

        public MergeInput? Base { get; set; }

        public string? BaseName { get; set; }

        public List<MergeInput> ExpertList { get; } = [];

        public IReadOnlyList<MergeInput> Experts => ExpertList;

        public IReadOnlyList<string> TensorNames { get; set; } = [];

        public IReadOnlyList<string> LayerGroups { get; set; } = [];

        public int LayerCount { get; set; }

        public string? TokenizerFolder { get; set; }

        public void Dispose()
        {
            Base?.Folder.Dispose();
            foreach (var e in ExpertList)
            {
                e.Folder.Dispose();
            }
        }
    }
}
