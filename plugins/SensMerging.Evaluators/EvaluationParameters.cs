using SensMerging.Abstractions;

namespace SensMerging.Evaluators;

/// <summary>Parameters both evaluation scorers read.</summary>
public static class EvaluationParameters
{
    public const string Samples = "samples";
    public const string MaxLength = "max_length";
    public const string BatchSize = "batch_size";
    public const string MaxNewTokens = "max_new_tokens";

    public const long DefaultSamples = 1000;
    public const long DefaultMaxLength = 256;
    public const long DefaultBatchSize = 64;
    public const long DefaultMaxNewTokens = 16;

    public static ParameterSpec SamplesSpec { get; } = ParameterSpec.Integer(
        Samples, DefaultSamples, ParameterScope.Global, "Evaluation samples used per task (the first ones of the task's set).", min: 1);

    public static ParameterSpec MaxLengthSpec { get; } = ParameterSpec.Integer(
        MaxLength, DefaultMaxLength, ParameterScope.Global, "Tokens per sample after truncation (the smaller of this and the data set's own max_length).", min: 2);

    public static ParameterSpec BatchSizeSpec { get; } = ParameterSpec.Integer(
        BatchSize, DefaultBatchSize, ParameterScope.Global, "Samples per forward pass.", min: 1, max: 4096);

    public static ParameterSpec MaxNewTokensSpec { get; } = ParameterSpec.Integer(
        MaxNewTokens, DefaultMaxNewTokens, ParameterScope.Global, "Most tokens generated per answer (greedy decoding stops earlier at EOS or a newline).", min: 1, max: 4096);

    /// <summary>Every evaluation parameter, defaults applied.</summary>
    public static EvaluationSettings Read(ResolvedParameters parameters) => new(
        Get(parameters, Samples, DefaultSamples),
        (int)Get(parameters, MaxNewTokens, DefaultMaxNewTokens),
        Get(parameters, MaxLength, DefaultMaxLength),
        (int)Get(parameters, BatchSize, DefaultBatchSize));

    public static long Get(ResolvedParameters parameters, string name, long fallback)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        return parameters.Has(name) ? parameters.Integer(name) : fallback;
    }

    /// <summary>The first <paramref name="limit"/> samples of <paramref name="data"/>.</summary>
    public static IReadOnlyList<TextSample> Take(TextDataset data, long limit)
    {
        ArgumentNullException.ThrowIfNull(data);
        var count = (int)Math.Min(Math.Max(limit, 1), data.Samples.Count);
        return count == data.Samples.Count ? data.Samples : data.Samples.Take(count).ToArray();
    }

    /// <summary>The configured token limit, capped by the data set's own limit when it sets one.</summary>
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
}

/// <summary>The evaluation parameters of one scorer call.</summary>
/// <param name="Samples">Samples per task (the first ones).</param>
/// <param name="MaxNewTokens">Most tokens generated per answer.</param>
/// <param name="MaxLength">Tokens per sample after truncation.</param>
/// <param name="BatchSize">Samples per forward pass.</param>
public sealed record EvaluationSettings(long Samples, int MaxNewTokens, long MaxLength, int BatchSize);
