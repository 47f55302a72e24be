using System.Globalization;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;

namespace SensMerging.Decorators.Sens;

/// <summary>
/// Sens-Merging over any strategy: runs a task-specific scorer (S, default <c>sensitivity</c>) and a cross-task scorer
/// (g, default <c>logit_alignment</c>), turns them into per-(expert, layer group) coefficients c (see <see cref="SensMath"/>)
/// and hands the inner strategy w_i * c_i^l as its per-model weights, tensor by tensor.
/// </summary>
public sealed partial class SensDecorator : IStrategyDecorator
{
    public const string DecoratorName = "sens";

    public const string Temperature = "temperature";
    public const string TemperatureScaleName = "temperature_scale";
    public const string Alignment = "alignment";
    public const string TaskScorer = "task_scorer";
    public const string CrossScorer = "cross_scorer";
    public const string TaskScaling = "task_scaling";
    public const string CrossScaling = "cross_scaling";
    public const string Samples = "samples";
    public const string MaxLength = "max_length";

    /// <summary>T = 2: the low end of the 2-6 range seen in public follow-up work; alpha * tau is at most 1, so a low T keeps the coefficients from collapsing to 1.</summary>
    public const double DefaultTemperature = 2.0;

    /// <summary>
    /// The default reading of g: <c>distance</c>, chosen by measurement on the development sets of the project's own zoo
    /// (a tuning seed kept apart from the reported ones), where it beat <c>alignment</c> at every temperature below 0.5
    /// (docs/results.md).
    /// </summary>
    public const string DefaultAlignment = "distance";

    /// <summary>m: calibration samples per task handed to the scorers (at most; a shorter calibration set gives all it has).</summary>
    public const long DefaultSamples = 100;

    /// <summary>Tokens per calibration sample handed to the scorers (at most; a calibration set's own smaller limit stays).</summary>
    public const long DefaultMaxLength = 256;

    public string Name => DecoratorName;

    public string Description => "Sens-Merging: scales each expert's weight per layer group by sensitivity and cross-task alignment coefficients.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float(Temperature, DefaultTemperature, ParameterScope.Global,
            "T: softmax temperature over experts (lower T, stronger steering).", min: 1e-6),
        ParameterSpec.Choice(TemperatureScaleName, "absolute", ParameterScope.Global,
            "absolute: softmax of alpha*tau/T as published; spread (the project's extension): alpha*tau is first divided by its "
            + "standard deviation over the experts within each layer group, so T counts spreads whatever the number of groups and experts.",
            "absolute", "spread"),
        ParameterSpec.Choice(Alignment, DefaultAlignment, ParameterScope.Global,
            "How g becomes transferability: alignment (t_i = sum exp(-g_ij/g_mean), closer is better) or distance (t_i = sum g_ij).",
            "alignment", "distance"),
        new ParameterSpec(TaskScorer, ParameterKind.String, "sensitivity", ParameterScope.Global,
            "Task-specific scorer (rows experts, columns layer groups), for example sensitivity or fisher."),
        new ParameterSpec(CrossScorer, ParameterKind.String, "logit_alignment", ParameterScope.Global,
            "Cross-task scorer (K x K table g_ij), for example logit_alignment."),
        ParameterSpec.Boolean(TaskScaling, true, ParameterScope.Global,
            "Task-specific scaling; off: alpha = 1 for every expert and group, and the task scorer is not run."),
        ParameterSpec.Boolean(CrossScaling, true, ParameterScope.Global,
            "Cross-task scaling; off: tau = 1/K for every expert, and the cross scorer is not run."),
        ParameterSpec.Integer(Samples, DefaultSamples, ParameterScope.Global,
            "m: calibration samples per task, at most (a calibration set with fewer gives all it has); the report records the samples used.", min: 1),
        ParameterSpec.Integer(MaxLength, DefaultMaxLength, ParameterScope.Global,
            "Tokens per calibration sample, at most (a calibration set's own smaller max_length stays); the report records the limit used.", min: 2),
    ];

    public async Task<IDecoratedStrategy> DecorateAsync(IMergeStrategy inner, DecoratorContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(context);
        var settings = SensSettings.Read(context.Parameters);
        // The calibration the scorers get is cut here, once, to samples and max_length; the report records these same
        // objects, so its samples and max_length are the values in effect (a calibration block's 20 / 64, not 100 / 256).
        var experts = context.Experts.Select(settings.Calibrated).ToArray();
        if (experts.Length == 0)
        {
            throw new InvalidOperationException("sens: the merge has no experts to weigh.");
        }
        if (settings.TaskScaling || settings.CrossScaling)
        {
            var missing = experts.Where(e => e.Data is null || e.Data.Samples.Count == 0).Select(e => e.Name).ToArray();
            if (missing.Length > 0)
            {
                throw new InvalidOperationException(
                    $"sens: expert(s) {string.Join(", ", missing.Select(n => $"'{n}'"))} have no calibration data; give each expert a calibration file " +
                    "(or turn off both task_scaling and cross_scaling).");
            }
        }

        var tables = new List<ScoreTable>();
        ScoreTable? taskTable = null;
        if (settings.TaskScaling)
        {
            taskTable = await RunScorerAsync(settings.TaskScorer, ScorerKind.TaskSpecific, settings, experts, context, cancellationToken).ConfigureAwait(false);
            ValidateRows(taskTable, experts);
            tables.Add(Rename(taskTable, "S"));
        }
        ScoreTable? crossTable = null;
        if (settings.CrossScaling)
        {
            crossTable = await RunScorerAsync(settings.CrossScorer, ScorerKind.CrossTask, settings, experts, context, cancellationToken).ConfigureAwait(false);
            ValidateRows(crossTable, experts);
            if (crossTable.Columns.Count != experts.Length)
            {
                throw new InvalidOperationException(
                    $"sens: cross scorer '{settings.CrossScorer}' returned {crossTable.Columns.Count} task columns for {experts.Length} experts.");
            }
            tables.Add(Rename(crossTable, "g"));
        }

        var groups = taskTable is not null ? taskTable.Columns.ToArray() : context.LayerGroups.ToArray();
        var result = SensMath.Compute(taskTable?.Values, crossTable?.Values, experts.Length, groups.Length, settings.Reading, settings.Temperature, settings.Scale);
        var names = experts.Select(e => e.Name).ToArray();
        tables.Add(new ScoreTable("alpha", ScorerKind.TaskSpecific, names, groups, result.Alpha));
        tables.Add(new ScoreTable("t", ScorerKind.CrossTask, ["t"], names, [result.Transferability]));
        tables.Add(new ScoreTable("tau", ScorerKind.CrossTask, ["tau"], names, [result.Tau]));
        tables.Add(new ScoreTable("sigma", ScorerKind.TaskSpecific, names, groups, result.Sigma));
        tables.Add(new ScoreTable("coefficients", ScorerKind.TaskSpecific, names, groups, result.Coefficients));

        var unscored = context.LayerGroups.Where(g => !groups.Contains(g, StringComparer.Ordinal)).ToArray();
        if (unscored.Length > 0)
        {
            LogUnscoredGroups(context.Logger, string.Join(", ", unscored));
        }
        var reportSettings = settings.ToDictionary(inner.Name, names, settings.TaskScaling || settings.CrossScaling ? experts : []);
        var report = new DecoratorReport(DecoratorName, reportSettings, tables);
        LogCoefficients(context.Logger, inner.Name, experts.Length, groups.Length,
            result.Coefficients.SelectMany(r => r).DefaultIfEmpty(1).Min(), result.Coefficients.SelectMany(r => r).DefaultIfEmpty(1).Max());
        return SensDecoratedStrategy.Create(inner, report, names, groups, result.Coefficients, context.Logger);
    }

    private static async Task<ScoreTable> RunScorerAsync(
        string name, ScorerKind expected, SensSettings settings, IReadOnlyList<ScoredModel> experts, DecoratorContext context, CancellationToken cancellationToken)
    {
        var scorer = context.Scorers.Get(name);
        if (scorer.Kind != expected)
        {
            throw new InvalidOperationException($"sens: scorer '{name}' produces {scorer.Kind} scores; this slot needs a {expected} scorer.");
        }
        // Pass samples and max_length to the scorers that declare them.
        var values = new Dictionary<string, object>(StringComparer.Ordinal);
        if (scorer.Parameters.Any(p => p.Name == Samples))
        {
            values[Samples] = settings.Samples;
        }
        if (scorer.Parameters.Any(p => p.Name == MaxLength))
        {
            values[MaxLength] = settings.MaxLength;
        }
        var scoring = new ScoringContext
        {
            Models = experts,
            Base = context.Base,
            Runtime = context.Runtime,
            Parameters = context.Scorers.ResolveParameters(scorer, values),
            Logger = context.Logger,
            Device = context.Device,
        };
        var table = await scorer.ScoreAsync(scoring, cancellationToken).ConfigureAwait(false);
        return table ?? throw new InvalidOperationException($"sens: scorer '{name}' returned no table.");
    }

    private static void ValidateRows(ScoreTable table, IReadOnlyList<ScoredModel> experts)
    {
        if (table.Values.Count != experts.Count || table.Rows.Count != experts.Count)
        {
            throw new InvalidOperationException($"sens: scorer '{table.Scorer}' returned {table.Values.Count} rows for {experts.Count} experts.");
        }
        for (var i = 0; i < experts.Count; i++)
        {
            if (!string.Equals(table.Rows[i], experts[i].Name, StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"sens: scorer '{table.Scorer}' row {i} is '{table.Rows[i]}', expected expert '{experts[i].Name}'.");
            }
            if (table.Values[i].Length != table.Columns.Count)
            {
                throw new InvalidOperationException($"sens: scorer '{table.Scorer}' row {i} has {table.Values[i].Length} values for {table.Columns.Count} columns.");
            }
        }
    }

    private static ScoreTable Rename(ScoreTable table, string name) => table with
    {
        Scorer = name,
        Details = new Dictionary<string, double>(table.Details),
    };

    [LoggerMessage(Level = LogLevel.Warning, Message = "sens: layer groups without a score keep coefficient 1: {Groups}")]
    private static partial void LogUnscoredGroups(ILogger logger, string groups);

    [LoggerMessage(Level = LogLevel.Information, Message = "sens({Inner}): coefficients for {Experts} experts x {Groups} layer groups, range {Min:F4}..{Max:F4}")]
    private static partial void LogCoefficients(ILogger logger, string inner, int experts, int groups, double min, double max);
}

/// <summary>The decorator's settings, read from its resolved parameters.</summary>
internal sealed record SensSettings(
    double Temperature, TemperatureScale Scale, TransferReading Reading, string TaskScorer, string CrossScorer, bool TaskScaling, bool CrossScaling, long Samples, long MaxLength)
{
    public static SensSettings Read(ResolvedParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        T Value<T>(string name, Func<string, T> read, T fallback) => parameters.Has(name) ? read(name) : fallback;
        var temperature = Value(SensDecorator.Temperature, n => parameters.Float(n), SensDecorator.DefaultTemperature);
        if (!(temperature > 0) || !double.IsFinite(temperature))
        {
            throw new ArgumentException($"sens: temperature must be a finite number above 0, got {temperature.ToString(CultureInfo.InvariantCulture)}.");
        }
        var scaleName = Value(SensDecorator.TemperatureScaleName, n => parameters.String(n), "absolute");
        var scale = scaleName.ToUpperInvariant() switch
        {
            "ABSOLUTE" => TemperatureScale.Absolute,
            "SPREAD" => TemperatureScale.Spread,
            _ => throw new ArgumentException($"sens: temperature_scale must be 'absolute' or 'spread', got '{scaleName}'."),
        };
        var alignment = Value(SensDecorator.Alignment, n => parameters.String(n), SensDecorator.DefaultAlignment);
        var reading = alignment.ToUpperInvariant() switch
        {
            "ALIGNMENT" => TransferReading.Alignment,
            "DISTANCE" => TransferReading.Distance,
            _ => throw new ArgumentException($"sens: alignment must be 'alignment' or 'distance', got '{alignment}'."),
        };
        var samples = Value(SensDecorator.Samples, n => parameters.Integer(n), SensDecorator.DefaultSamples);
        var maxLength = Value(SensDecorator.MaxLength, n => parameters.Integer(n), SensDecorator.DefaultMaxLength);
        if (samples < 1 || maxLength < 2)
        {
            throw new ArgumentException($"sens: samples must be at least 1 and max_length at least 2 (got {samples}, {maxLength}).");
        }
        return new SensSettings(
            temperature,
            scale,
            reading,
            Value(SensDecorator.TaskScorer, n => parameters.String(n), "sensitivity"),
            Value(SensDecorator.CrossScorer, n => parameters.String(n), "logit_alignment"),
            Value(SensDecorator.TaskScaling, n => parameters.Boolean(n), true),
            Value(SensDecorator.CrossScaling, n => parameters.Boolean(n), true),
            samples,
            maxLength);
    }

    /// <summary>
    /// <paramref name="expert"/> with its calibration cut to what the scorers use: the first <see cref="Samples"/> samples
    /// (all of a shorter set) and at most <see cref="MaxLength"/> tokens (a set's own smaller limit stays).
    /// </summary>
    public ScoredModel Calibrated(ScoredModel expert)
    {
        ArgumentNullException.ThrowIfNull(expert);
        if (expert.Data is not { } data)
        {
            return expert;
        }
        var cap = (int)Math.Min(MaxLength, int.MaxValue);
        return expert with
        {
            Data = data with
            {
                Samples = data.Samples.Count <= Samples ? data.Samples : data.Samples.Take((int)Samples).ToArray(),
                MaxLength = data.MaxLength > 0 ? Math.Min(data.MaxLength, cap) : cap,
            },
        };
    }

    /// <summary>
    /// The report's settings. <c>samples</c> and <c>max_length</c> come from <paramref name="scored"/>, the calibration the
    /// scorers got (<see cref="Calibrated"/>): one number when every expert's is the same, else a map expert to number;
    /// absent when no scorer ran on calibration data.
    /// </summary>
    public IReadOnlyDictionary<string, object> ToDictionary(string inner, IReadOnlyList<string> experts, IReadOnlyList<ScoredModel> scored)
    {
        var settings = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["inner"] = inner,
            ["experts"] = experts.ToArray(),
            [SensDecorator.Temperature] = Temperature,
            [SensDecorator.TemperatureScaleName] = Scale == TemperatureScale.Spread ? "spread" : "absolute",
            [SensDecorator.Alignment] = Reading == TransferReading.Alignment ? "alignment" : "distance",
            [SensDecorator.TaskScorer] = TaskScorer,
            [SensDecorator.CrossScorer] = CrossScorer,
            [SensDecorator.TaskScaling] = TaskScaling,
            [SensDecorator.CrossScaling] = CrossScaling,
        };
        var data = scored.Where(e => e.Data is not null).ToArray();
        if (data.Length > 0)
        {
            settings[SensDecorator.Samples] = InEffect(data, d => d.Samples.Count);
            settings[SensDecorator.MaxLength] = InEffect(data, d => d.MaxLength);
        }
        return settings;
    }

    private static object InEffect(IReadOnlyList<ScoredModel> scored, Func<TextDataset, int> value)
    {
        var values = scored.Select(e => (e.Name, Value: (long)value(e.Data!))).ToArray();
        return values.Select(v => v.Value).Distinct().Count() == 1
            ? values[0].Value
            : values.ToDictionary(v => v.Name, v => v.Value, StringComparer.Ordinal);
    }
}
