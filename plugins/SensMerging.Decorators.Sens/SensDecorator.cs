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

    /// <summary>The report's key for the calibration samples the scorers used (from each expert's calibration block).</summary>
    public const string Samples = "samples";

    /// <summary>The report's key for the token limit the scorers used (from each expert's calibration block).</summary>
    public const string MaxLength = "max_length";

    /// <summary>T = 2: the low end of the 2-6 range seen in public follow-up work; alpha * tau is at most 1, so a low T keeps the coefficients from collapsing to 1.</summary>
    public const double DefaultTemperature = 2.0;

    /// <summary>
    /// The default reading of g: <c>distance</c>, chosen by measurement on the development sets of the project's own zoo
    /// (a tuning seed kept apart from the reported ones), where it beat <c>alignment</c> at every temperature below 0.5
    /// (docs/results.md).
    /// </summary>
    public const string DefaultAlignment = "distance";

    public string Name => DecoratorName;

    public string Description => "Sens-Merging: scales each expert's weight per layer group by sensitivity and cross-task alignment coefficients.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float(Temperature, DefaultTemperature, ParameterScope.Global,
            "T: softmax temperature over experts (lower T, stronger steering); may vary by layer group.", min: 1e-6) with { PerLayerGroup = true },
        ParameterSpec.Choice(TemperatureScaleName, "absolute", ParameterScope.Global,
            "absolute: softmax of alpha*tau/T as published; spread (the project's extension): alpha*tau is first divided by its "
            + "standard deviation over the experts within each layer group, so T counts spreads whatever the number of groups and experts.",
            "absolute", "spread") with { PerLayerGroup = true },
        ParameterSpec.Choice(Alignment, DefaultAlignment, ParameterScope.Global,
            "How g becomes transferability: alignment (t_i = sum exp(-g_ij/g_mean), closer is better) or distance (t_i = sum g_ij).",
            "alignment", "distance"),
        new ParameterSpec(TaskScorer, ParameterKind.String, "sensitivity", ParameterScope.Global,
            "Task-specific scorer (rows experts, columns layer groups), for example sensitivity or fisher."),
        new ParameterSpec(CrossScorer, ParameterKind.String, "logit_alignment", ParameterScope.Global,
            "Cross-task scorer (K x K table g_ij), for example logit_alignment."),
        ParameterSpec.Boolean(TaskScaling, true, ParameterScope.Global,
            "Task-specific scaling; off: alpha = 1 for every expert (in the groups where it is off; the task scorer runs only when some group has it on).")
            with { PerLayerGroup = true },
        ParameterSpec.Boolean(CrossScaling, true, ParameterScope.Global,
            "Cross-task scaling; off: tau = 1/K for every expert (in the groups where it is off; the cross scorer runs only when some group has it on).")
            with { PerLayerGroup = true },
    ];

    public async Task<IDecoratedStrategy> DecorateAsync(IMergeStrategy inner, DecoratorContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(context);
        var settings = SensSettings.Read(context.Parameters);
        // temperature, temperature_scale, task_scaling and cross_scaling may differ between layer groups (contract 1.6).
        GroupSettings SettingsOf(string group) => SensSettings.Read(context.ParametersOf(group)).Group;
        var groupSettings = context.LayerGroups.Count == 0 ? [settings.Group] : context.LayerGroups.Select(SettingsOf).ToArray();
        var needsTask = groupSettings.Any(g => g.TaskScaling);
        var needsCross = groupSettings.Any(g => g.CrossScaling);
        // The calibration is each expert's calibration block as the host loaded it (samples and max_length are set there,
        // and only there); the scorers get all of it, and the report records these same objects.
        var experts = context.Experts.ToArray();
        if (experts.Length == 0)
        {
            throw new InvalidOperationException("sens: the merge has no experts to weigh.");
        }
        if (needsTask || needsCross)
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
        if (needsTask)
        {
            taskTable = await RunScorerAsync(settings.TaskScorer, ScorerKind.TaskSpecific, experts, context, cancellationToken).ConfigureAwait(false);
            ValidateRows(taskTable, experts);
            tables.Add(Rename(taskTable, "S"));
        }
        ScoreTable? crossTable = null;
        if (needsCross)
        {
            crossTable = await RunScorerAsync(settings.CrossScorer, ScorerKind.CrossTask, experts, context, cancellationToken).ConfigureAwait(false);
            ValidateRows(crossTable, experts);
            if (crossTable.Columns.Count != experts.Length)
            {
                throw new InvalidOperationException(
                    $"sens: cross scorer '{settings.CrossScorer}' returned {crossTable.Columns.Count} task columns for {experts.Length} experts.");
            }
            tables.Add(Rename(crossTable, "g"));
        }

        var groups = taskTable is not null ? taskTable.Columns.ToArray() : context.LayerGroups.ToArray();
        var settingsOf = groups.Select(SettingsOf).ToArray();
        var result = SensMath.Compute(taskTable?.Values, crossTable?.Values, experts.Length, settingsOf, settings.Reading);
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
        var reportSettings = settings.ToDictionary(inner.Name, names, needsTask || needsCross ? experts : [], groups, settingsOf);
        var report = new DecoratorReport(DecoratorName, reportSettings, tables);
        LogCoefficients(context.Logger, inner.Name, experts.Length, groups.Length,
            result.Coefficients.SelectMany(r => r).DefaultIfEmpty(1).Min(), result.Coefficients.SelectMany(r => r).DefaultIfEmpty(1).Max());
        return SensDecoratedStrategy.Create(inner, report, names, groups, result.Coefficients, context.Logger);
    }

    private static async Task<ScoreTable> RunScorerAsync(
        string name, ScorerKind expected, IReadOnlyList<ScoredModel> experts, DecoratorContext context, CancellationToken cancellationToken)
    {
        var scorer = context.Scorers.Get(name);
        if (scorer.Kind != expected)
        {
            throw new InvalidOperationException($"sens: scorer '{name}' produces {scorer.Kind} scores; this slot needs a {expected} scorer.");
        }
        // The scorers that declare samples and max_length get the calibration's own, so they score all of it.
        var values = new Dictionary<string, object>(StringComparer.Ordinal);
        var data = experts.Where(e => e.Data is not null).Select(e => e.Data!).ToArray();
        if (data.Length > 0 && scorer.Parameters.Any(p => p.Name == Samples))
        {
            values[Samples] = (long)Math.Max(1, data.Max(d => d.Samples.Count));
        }
        if (data.Any(d => d.MaxLength > 0) && scorer.Parameters.Any(p => p.Name == MaxLength))
        {
            values[MaxLength] = (long)Math.Max(2, data.Max(d => d.MaxLength));
        }
        var scoring = new ScoringContext
        {
            Models = experts,
            Base = context.Base,
            Runtime = context.Runtime,
            Parameters = context.Scorers.ResolveParameters(scorer, values),
            Logger = context.Logger,
            Device = context.Device,
            MaxMemoryBytes = context.MaxMemoryBytes,
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

    [LoggerMessage(EventId = 8001, Level = LogLevel.Warning, Message = "sens: layer groups without a score keep coefficient 1: {Groups}")]
    private static partial void LogUnscoredGroups(ILogger logger, string groups);

    [LoggerMessage(EventId = 8002, Level = LogLevel.Information, Message = "sens({Inner}): coefficients for {Experts} experts x {Groups} layer groups, range {Min:F4}..{Max:F4}")]
    private static partial void LogCoefficients(ILogger logger, string inner, int experts, int groups, double min, double max);
}

/// <summary>The decorator's settings, read from its resolved parameters.</summary>
internal sealed record SensSettings(
    double Temperature, TemperatureScale Scale, TransferReading Reading, string TaskScorer, string CrossScorer, bool TaskScaling, bool CrossScaling)
{
    /// <summary>
    /// The settings from the resolved parameters. The host hands every declared parameter, its default applied and its
    /// range checked (contract 1.3), so nothing here falls back or checks again; only the choices are mapped to enums.
    /// </summary>
    public static SensSettings Read(ResolvedParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var scale = parameters.String(SensDecorator.TemperatureScaleName) switch
        {
            "spread" => TemperatureScale.Spread,
            _ => TemperatureScale.Absolute,
        };
        var reading = parameters.String(SensDecorator.Alignment) switch
        {
            "alignment" => TransferReading.Alignment,
            _ => TransferReading.Distance,
        };
        return new SensSettings(
            parameters.Float(SensDecorator.Temperature),
            scale,
            reading,
            parameters.String(SensDecorator.TaskScorer),
            parameters.String(SensDecorator.CrossScorer),
            parameters.Boolean(SensDecorator.TaskScaling),
            parameters.Boolean(SensDecorator.CrossScaling));
    }

    /// <summary>The settings that may differ between layer groups, as <see cref="SensMath"/> takes them.</summary>
    public GroupSettings Group => new(Temperature, Scale, TaskScaling, CrossScaling);

    /// <summary>
    /// The report's settings. <c>temperature</c>, <c>temperature_scale</c>, <c>task_scaling</c> and <c>cross_scaling</c> are
    /// the values used in <paramref name="groups"/> (<paramref name="groupSettings"/>): one value when every group's is the
    /// same, else a map layer group to value. <c>samples</c> and <c>max_length</c> come from <paramref name="scored"/>, the
    /// calibration the scorers got (each expert's calibration block): one number when every expert's is the same, else a map
    /// expert to number; absent when no scorer ran on calibration data.
    /// </summary>
    public IReadOnlyDictionary<string, object> ToDictionary(
        string inner, IReadOnlyList<string> experts, IReadOnlyList<ScoredModel> scored, IReadOnlyList<string> groups, IReadOnlyList<GroupSettings> groupSettings)
    {
        var settings = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["inner"] = inner,
            ["experts"] = experts.ToArray(),
            [SensDecorator.Temperature] = ByGroup(groups, groupSettings, g => g.Temperature, Temperature),
            [SensDecorator.TemperatureScaleName] = ByGroup(groups, groupSettings, g => g.Scale == TemperatureScale.Spread ? "spread" : "absolute",
                Scale == TemperatureScale.Spread ? "spread" : "absolute"),
            [SensDecorator.Alignment] = Reading == TransferReading.Alignment ? "alignment" : "distance",
            [SensDecorator.TaskScorer] = TaskScorer,
            [SensDecorator.CrossScorer] = CrossScorer,
            [SensDecorator.TaskScaling] = ByGroup(groups, groupSettings, g => g.TaskScaling, TaskScaling),
            [SensDecorator.CrossScaling] = ByGroup(groups, groupSettings, g => g.CrossScaling, CrossScaling),
        };
        var data = scored.Where(e => e.Data is not null).ToArray();
        if (data.Length > 0)
        {
            settings[SensDecorator.Samples] = InEffect(data, d => d.Samples.Count);
            settings[SensDecorator.MaxLength] = InEffect(data, d => d.MaxLength);
        }
        return settings;
    }

    /// <summary>One value when every group's is the same (or there are no groups: <paramref name="merge"/>), else group to value.</summary>
    private static object ByGroup<T>(IReadOnlyList<string> groups, IReadOnlyList<GroupSettings> groupSettings, Func<GroupSettings, T> value, T merge)
        where T : notnull
    {
        var values = groupSettings.Select(value).ToArray();
        if (values.Length == 0 || values.Distinct().Count() == 1)
        {
            return values.Length == 0 ? merge : values[0];
        }
        var map = new Dictionary<string, object>(StringComparer.Ordinal);
        for (var g = 0; g < groups.Count; g++)
        {
            map[groups[g]] = values[g];
        }
        return map;
    }

    private static object InEffect(IReadOnlyList<ScoredModel> scored, Func<TextDataset, int> value)
    {
        var values = scored.Select(e => (e.Name, Value: (long)value(e.Data!))).ToArray();
        return values.Select(v => v.Value).Distinct().Count() == 1
            ? values[0].Value
            : values.ToDictionary(v => v.Name, v => v.Value, StringComparer.Ordinal);
    }
}
