using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Scorers;

/// <summary>
/// Sens-Merging's cross-task score: for every ordered pair i != j, on task j's calibration data,
/// g_ij = (1/m) sum_{x in D_j} mean_t || z_i(x)_t - z_j(x)_t ||_2 over the full vocabulary.
/// Rows: expert i; columns: task j (the task of expert j, same order); the diagonal is 0.
/// </summary>
/// <remarks>
/// Tokens compared: the positions whose next-token prediction belongs to the task's loss (the sample's LossMask:
/// the response tokens of a prompt/response sample, every predicting position of a plain-text sample); a sample
/// without such positions is compared on all its positions.
/// One model's forward at a time and 2K model loads in all: phase 1 loads each expert j and stores the reference logits
/// z_j of its own task's samples (in memory up to <c>reference_memory_mb</c>, beyond that in a temporary file);
/// phase 2 loads each expert i once and compares it with the stored references of every other task.
/// </remarks>
public sealed partial class LogitAlignmentScorer : IScorer
{
    public const string ScorerName = "logit_alignment";

    /// <summary>Parameter name of the memory budget for reference logits, in MiB.</summary>
    public const string ReferenceMemoryMb = "reference_memory_mb";

    public string Name => ScorerName;

    public string Description => "g_ij: mean per-token L2 distance between expert i's and expert j's full-vocabulary logits on task j's data.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        Calibration.SamplesSpec,
        Calibration.MaxLengthSpec,
        ParameterSpec.Integer(ReferenceMemoryMb, 1024, ParameterScope.Global,
            "Memory for the stored reference logits (MiB); beyond it they go to a temporary file.", min: 0),
    ];

    public ScorerKind Kind => ScorerKind.CrossTask;

    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken) =>
        Task.Run(() => Score(context, cancellationToken), cancellationToken);

    private ScoreTable Score(ScoringContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        var experts = context.Models;
        if (experts.Count == 0)
        {
            throw new InvalidOperationException($"scorer '{ScorerName}' got no experts to score.");
        }
        var parameters = context.Parameters;
        // Every declared parameter arrives with its default applied and its range checked (contract 1.3).
        var m = parameters.Integer(Calibration.Samples);
        var maxLength = parameters.Integer(Calibration.MaxLength);
        var budgetMb = parameters.Integer(ReferenceMemoryMb);
        var uses = experts.Select(e => Calibration.Use(e, m, maxLength, ScorerName)).ToArray();

        var watch = Stopwatch.StartNew();
        var k = experts.Count;
        var g = Enumerable.Range(0, k).Select(_ => new double[k]).ToArray();
        var loadOptions = new ModelLoadOptions(context.Device, ScalarType.Float32, RequiresGrad: false) { MaxMemoryBytes = context.MaxMemoryBytes };
        using var store = new ReferenceLogitStore(budgetMb * 1024L * 1024L);
        var tasks = new TaskSamples[k];
        long forwardPasses = 0, tokens = 0;
        int? vocabulary = null;
        string? vocabularyFrom = null;

        if (k > 1)
        {
            // Phase 1: each task's own expert, its reference logits.
            for (var j = 0; j < k; j++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var model = context.Runtime.Load(experts[j].ModelPath, loadOptions, cancellationToken);
                CheckVocabulary(model, experts[j].Name, ref vocabulary, ref vocabularyFrom);
                var limit = uses[j].MaxLength;
                var samples = new List<EncodedSample>(uses[j].Samples.Count);
                foreach (var text in uses[j].Samples)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var encoded = model.Tokenizer.Encode(text, limit);
                    if (encoded.Length == 0)
                    {
                        LogEmptySample(context.Logger, experts[j].Name);
                        continue;
                    }
                    var positions = ComparedPositions(encoded);
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    var logits = SelectedLogits(model, encoded, positions);
                    samples.Add(new EncodedSample(encoded.Ids, positions, store.Add(logits, cancellationToken)));
                    forwardPasses++;
                    tokens += positions.Length;
                }
                if (samples.Count == 0)
                {
                    throw new InvalidOperationException(
                        $"scorer '{ScorerName}': expert '{experts[j].Name}''s calibration samples encode to no tokens ('{experts[j].Data!.SourcePath}').");
                }
                tasks[j] = new TaskSamples(samples);
            }
            LogReferencesStored(context.Logger, store.Count, store.BytesInMemory, store.BytesOnDisk);

            // Phase 2: each expert once, against every other task's references.
            for (var i = 0; i < k; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var model = context.Runtime.Load(experts[i].ModelPath, loadOptions, cancellationToken);
                CheckVocabulary(model, experts[i].Name, ref vocabulary, ref vocabularyFrom);
                for (var j = 0; j < k; j++)
                {
                    if (j == i)
                    {
                        continue;
                    }
                    double total = 0;
                    foreach (var sample in tasks[j].Samples)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        using var scope = NewDisposeScope();
                        using var noGrad = no_grad();
                        var mine = SelectedLogits(model, new TokenizedSample(sample.Ids, []), sample.Positions);
                        var reference = store.Get(sample.Reference, cancellationToken).to(mine.device);
                        // Per-token L2 over the vocabulary, averaged over the compared tokens.
                        mine.sub_(reference);
                        var distance = DoubleSums.Rows(mine.mul_(mine).contiguous()).Average(Math.Sqrt);
                        total += distance;
                        forwardPasses++;
                    }
                    g[i][j] = total / tasks[j].Samples.Count;
                }
                LogExpertCompared(context.Logger, experts[i].Name, watch.Elapsed.TotalSeconds);
            }
        }

        var names = experts.Select(e => e.Name).ToArray();
        var columns = experts.Select(e => e.Data?.Task is { Length: > 0 } task ? task : e.Name).ToArray();
        var details = new Dictionary<string, double>
        {
            ["samples"] = tasks.Where(t => t is not null).Sum(t => t.Samples.Count),
            ["tokens"] = tokens,
            ["forward_passes"] = forwardPasses,
            ["reference_bytes_in_memory"] = store.BytesInMemory,
            ["reference_bytes_spilled"] = store.BytesOnDisk,
            ["seconds"] = watch.Elapsed.TotalSeconds,
        };
        Calibration.Describe(details, uses);
        return new ScoreTable(ScorerName, ScorerKind.CrossTask, names, columns, g) { Details = details };
    }

    /// <summary>The positions compared for a sample: its loss positions, or all positions when it has none.</summary>
    internal static long[] ComparedPositions(TokenizedSample sample)
    {
        var positions = new List<long>(sample.Length);
        var last = Math.Min(sample.Length - 1, sample.LossMask.Length);
        for (var t = 0; t < last; t++)
        {
            if (sample.LossMask[t])
            {
                positions.Add(t);
            }
        }
        if (positions.Count == 0)
        {
            for (var t = 0; t < sample.Length; t++)
            {
                positions.Add(t);
            }
        }
        return positions.ToArray();
    }

    /// <summary>Float32 logits <c>[positions, vocabulary]</c> of one sample (a fresh tensor the caller may change).</summary>
    private static Tensor SelectedLogits(ICausalLanguageModel model, TokenizedSample sample, long[] positions)
    {
        // Ids on the CPU: the model moves them to its device (a streamed model's weights are on no device between passes).
        var ids = tensor(sample.Ids, dtype: ScalarType.Int64).unsqueeze(0);
        var logits = model.Forward(ids);
        if (logits.dim() != 3 || logits.shape[0] != 1 || logits.shape[1] != sample.Ids.Length)
        {
            throw new InvalidOperationException(
                $"model '{model.ModelPath}' returned logits of shape [{string.Join(", ", logits.shape)}] for 1 x {sample.Ids.Length} ids; expected [1, {sample.Ids.Length}, vocabulary].");
        }
        var index = tensor(positions, dtype: ScalarType.Int64, device: logits.device);
        return logits[0].index_select(0, index).to(ScalarType.Float32).contiguous();
    }

    private static void CheckVocabulary(ICausalLanguageModel model, string expert, ref int? vocabulary, ref string? from)
    {
        if (vocabulary is null)
        {
            vocabulary = model.VocabularySize;
            from = expert;
        }
        else if (vocabulary != model.VocabularySize)
        {
            throw new InvalidOperationException(
                $"scorer '{ScorerName}': expert '{expert}' has a vocabulary of {model.VocabularySize} tokens, expert '{from}' one of {vocabulary}; logits can only be compared over one vocabulary.");
        }
    }

    [LoggerMessage(EventId = 8101, Level = LogLevel.Warning, Message = "logit_alignment: a calibration sample of expert {Expert} encodes to no tokens; skipped")]
    private static partial void LogEmptySample(ILogger logger, string expert);

    [LoggerMessage(EventId = 8102, Level = LogLevel.Information, Message = "logit_alignment: {Count} reference samples stored ({InMemory} bytes in memory, {OnDisk} bytes in a temporary file)")]
    private static partial void LogReferencesStored(ILogger logger, int count, long inMemory, long onDisk);

    [LoggerMessage(EventId = 8103, Level = LogLevel.Information, Message = "logit_alignment: expert {Expert} compared on the other tasks ({Seconds:F1} s so far)")]
    private static partial void LogExpertCompared(ILogger logger, string expert, double seconds);

    private sealed record EncodedSample(long[] Ids, long[] Positions, int Reference);

    private sealed record TaskSamples(IReadOnlyList<EncodedSample> Samples);
}
