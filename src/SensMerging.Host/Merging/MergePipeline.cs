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

    /// <summary>Memory budget in bytes for each model the scorers load (<c>--max-memory</c>, <c>SensMerge:MaxMemory</c>), or null for none.</summary>
    public long? MaxMemoryBytes { get; init; }

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

/// <summary>Where the scorers run: the device and the memory budget for each model they load (null: no limit).</summary>
public sealed record ScoringDevice(string Device, long? MaxMemoryBytes = null);

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
    private readonly MergeProvenance _provenance;

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
        _provenance = new MergeProvenance(plugins);
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
        // Before any pull, hash or record: the output folder may not overlap an input, the config, the Hub cache or the
        // registry; no other merge may be writing it; it must be absent or empty unless overwriting. Held to the end.
        using var outputClaim = _outputGuard.Claim(request.OutputPath, request.Overwrite, config);
        var workPath = MergedModelWriter.NewWorkPath(request.OutputPath);

        var resolveWatch = Stopwatch.StartNew();
        using var inputs = await ResolveInputsAsync(config, strategy, cancellationToken);
        var layerCount = inputs.LayerCount;
        // A multi-slice config plans each output tensor from its slice (every parameter resolved on the way); any other
        // reads every tensor of the reference model under its own name from every input.
        IReadOnlyDictionary<string, TensorParameters>? parameters = null;
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
            parameters = ParameterResolver.Validate(config, strategy, inputs.TensorNames, layerCount);
        }
        var inputRecords = await MergeProvenance.DescribeInputsAsync(inputs, _resolver, cancellationToken);
        resolveWatch.Stop();

        var seed = request.Seed ?? config.Seed ?? 0;
        var draft = _provenance.Draft(request, configText, config, strategy, inputs, inputRecords, seed, workPath);
        var record = await _registry.BeginAsync(draft, cancellationToken);
        LogStarted(record.Id, strategy.Name, inputs.Experts.Count);
        var durations = new Dictionary<string, double> { [Phases.Resolve] = resolveWatch.Elapsed.TotalSeconds };
        try
        {
            var scoringWatch = Stopwatch.StartNew();
            var prepared = await PrepareAsync(config, strategy, inputs, new ScoringDevice(request.Device, request.MaxMemoryBytes), cancellationToken);
            durations[Phases.Scoring] = scoringWatch.Elapsed.TotalSeconds;
            if (prepared.Reports.Count > 0)
            {
                await _registry.UpdateAsync(record.Id, r => _provenance.WithReports(r, prepared), cancellationToken);
            }

            var outDType = request.OutputDType ?? config.OutDtype;
            var plan = new MergePlan
            {
                Base = layout is null ? inputs.Base : null,
                Models = inputs.Experts,
                Strategy = prepared.Strategy,
                ParameterResolver = parameters is null ? null : (tensor, _) => parameters[tensor].Parameters,
                WeightOverride = parameters is null ? null : (tensor, _) => parameters[tensor].Weights,
                Layout = layout,
                Vocabulary = inputs.Vocabulary,
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
                ChatTemplate = inputs.ChatTemplate,
                Card = MergeProvenance.Card(config, record.Id, prepared, inputs, seed),
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
    public async Task<PreparedStrategy> ScoreAsync(string configPath, ScoringDevice device, CancellationToken cancellationToken)
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

    private async Task<PreparedStrategy> PrepareAsync(MergeConfig config, IMergeStrategy strategy, ResolvedInputs inputs, ScoringDevice device, CancellationToken cancellationToken)
    {
        var reports = new List<DecoratorReport>();
        var scorers = new ScorerCatalog(_plugins, _scoreCache);
        if (config.Decorators.Count == 0)
        {
            return new PreparedStrategy(strategy, reports, []);
        }
        var experts = await ScoredExpertsAsync(config, inputs, strategy.Traits.RequiresBaseModel, cancellationToken);
        var baseModel = inputs.Base is null ? null : new ScoredModel(inputs.Base.Name, inputs.Base.Folder.Path, null);
        foreach (var decoratorConfig in config.Decorators)
        {
            var decorator = _plugins.GetDecorator(decoratorConfig.Name);
            var parameters = DecoratorParameters.Resolve($"decorator '{decorator.Name}'", decoratorConfig.Parameters, decorator.Parameters, inputs.LayerGroups, inputs.LayerCount);
            var context = new DecoratorContext
            {
                Experts = experts,
                Base = baseModel,
                LayerGroups = inputs.LayerGroups,
                Parameters = parameters.Merge,
                LayerGroupParameters = parameters.LayerGroups,
                Scorers = scorers,
                Runtime = _runtime,
                Logger = _loggerFactory.CreateLogger("SensMerging.Decorator." + decorator.Name),
                Device = device.Device,
                MaxMemoryBytes = device.MaxMemoryBytes,
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
        var resolved = new List<ResolvedModel>();
        foreach (var reference in config.ResolvedModels())
        {
            resolved.Add(await _resolver.ResolveAsync(reference, cancellationToken));
        }
        return ResolvedInputs.Open(config, strategy.Traits.RequiresBaseModel, resolved);
    }

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "Merge {RecordId} started: {Strategy} over {ExpertCount} expert(s)")]
    private partial void LogStarted(string recordId, string strategy, int expertCount);

    [LoggerMessage(EventId = 201, Level = LogLevel.Information, Message = "Merge {RecordId} finished: {Output} ({TensorCount} tensors, {Seconds:F1} s)")]
    private partial void LogFinished(string recordId, string output, int tensorCount, double seconds);
}
