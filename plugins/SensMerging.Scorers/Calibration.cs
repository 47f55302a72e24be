using SensMerging.Abstractions;

namespace SensMerging.Scorers;

/// <summary>The calibration settings every scorer here shares, and the checks on the calibration data.</summary>
public static class Calibration
{
    /// <summary>Parameter name of m, the number of calibration samples per task.</summary>
    public const string Samples = "samples";

    /// <summary>Parameter name of the token limit per sample.</summary>
    public const string MaxLength = "max_length";

    /// <summary>m = 100 samples per task, the value seen in public follow-up work on Sens-Merging.</summary>
    public const long DefaultSamples = 100;

    /// <summary>Tokens per sample after truncation.</summary>
    public const long DefaultMaxLength = 256;

    public static ParameterSpec SamplesSpec { get; } = ParameterSpec.Integer(
        Samples, DefaultSamples, ParameterScope.Global,
        "m: calibration samples used per task (the first m of the task's file; fewer when the file is shorter).", min: 1);

    public static ParameterSpec MaxLengthSpec { get; } = ParameterSpec.Integer(
        MaxLength, DefaultMaxLength, ParameterScope.Global,
        "Tokens per sample after truncation (the smaller of this and the data set's own max_length).", min: 2);

    /// <summary>
    /// What a scorer uses of <paramref name="model"/>'s calibration set with <paramref name="m"/> samples and
    /// <paramref name="maxLength"/> tokens asked for: the first m samples (fewer when the set is shorter) and the token
    /// limit (the set's own when smaller). Scorers score with it and report it, so the details say what was used.
    /// </summary>
    public static CalibrationUse Use(ScoredModel model, long m, long maxLength, string scorer) =>
        new(TakeSamples(model, m, scorer), EffectiveMaxLength(model.Data!, maxLength));

    /// <summary>The details a table gets from the calibration it used: <c>samples_per_task</c> and <c>max_length</c>, the largest over the tasks.</summary>
    public static void Describe(IDictionary<string, double> details, IReadOnlyList<CalibrationUse> uses)
    {
        ArgumentNullException.ThrowIfNull(details);
        ArgumentNullException.ThrowIfNull(uses);
        details["samples_per_task"] = uses.Count == 0 ? 0 : uses.Max(u => u.Samples.Count);
        details[MaxLength] = uses.Count == 0 ? 0 : uses.Max(u => u.MaxLength);
    }

    /// <summary>The first <paramref name="m"/> samples of <paramref name="model"/>'s data; a clear error when it has none.</summary>
    public static IReadOnlyList<TextSample> TakeSamples(ScoredModel model, long m, string scorer)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Data is null)
        {
            throw new InvalidOperationException(
                $"expert '{model.Name}' has no calibration data: scorer '{scorer}' needs samples of the expert's task (give it a calibration file).");
        }
        if (model.Data.Samples.Count == 0)
        {
            throw new InvalidOperationException(
                $"expert '{model.Name}' has an empty calibration set ('{model.Data.SourcePath}'): scorer '{scorer}' needs at least one sample.");
        }
        if (m < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(m), m, $"scorer '{scorer}': '{Samples}' must be at least 1.");
        }
        var count = (int)Math.Min(m, model.Data.Samples.Count);
        return count == model.Data.Samples.Count ? model.Data.Samples : model.Data.Samples.Take(count).ToArray();
    }

    /// <summary>The token limit: the configured one, capped by the data set's own limit when it sets one.</summary>
    public static int EffectiveMaxLength(TextDataset data, long configured)
    {
        ArgumentNullException.ThrowIfNull(data);
        var limit = configured < 2 ? DefaultMaxLength : configured;
        if (data.MaxLength > 0)
        {
            limit = Math.Min(limit, data.MaxLength);
        }
        return (int)Math.Min(limit, int.MaxValue);
    }

    /// <summary>Positions whose next-token prediction counts (LossMask[t] true and a next token exists).</summary>
    public static int LossTokenCount(TokenizedSample sample)
    {
        ArgumentNullException.ThrowIfNull(sample);
        var count = 0;
        var last = Math.Min(sample.Length - 1, sample.LossMask.Length);
        for (var t = 0; t < last; t++)
        {
            if (sample.LossMask[t])
            {
                count++;
            }
        }
        return count;
    }

    /// <summary>The columns of a task-specific table: the layer groups of the weights, in model order.</summary>
    public static string[] GroupsInModelOrder(IEnumerable<string> weightNames) => LayerGroups.InModelOrder(weightNames);
}

/// <summary>The calibration a scorer used for one task: its samples and its token limit (<see cref="Calibration.Use"/>).</summary>
/// <param name="Samples">The samples scored.</param>
/// <param name="MaxLength">Tokens per sample after truncation.</param>
public sealed record CalibrationUse(IReadOnlyList<TextSample> Samples, int MaxLength);
