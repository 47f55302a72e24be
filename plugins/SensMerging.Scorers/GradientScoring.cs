using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Scorers;

/// <summary>What a gradient scorer adds up per weight and sample.</summary>
public enum GradientStatistic
{
    /// <summary>sum_p |theta_p * dL/dtheta_p| (first-order Taylor estimate of the loss change on removal).</summary>
    WeightTimesGradient,

    /// <summary>sum_p (dL/dtheta_p)^2 (empirical Fisher information, diagonal).</summary>
    SquaredGradient,
}

/// <summary>
/// The loop shared by <c>sensitivity</c> and <c>fisher</c>: one expert loaded at a time with gradients on, one sample's
/// activations alive at a time; per sample the statistic is summed per layer group (in double), then averaged over the
/// samples used. A runtime model that offers <see cref="ILayerwiseGradients"/> is back-propagated one block at a time
/// and each gradient is reduced to its statistic as soon as it exists (never all gradients at once); other models
/// take a full <c>loss.backward()</c> and are read from the weights' <c>.grad</c>.
/// </summary>
internal static partial class GradientScoring
{
    public static ScoreTable Run(string scorer, GradientStatistic statistic, ScoringContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Models.Count == 0)
        {
            throw new InvalidOperationException($"scorer '{scorer}' got no experts to score.");
        }
        // Declared parameters arrive with their defaults applied and their ranges checked (contract 1.3).
        var m = context.Parameters.Integer(Calibration.Samples);
        var maxLength = context.Parameters.Integer(Calibration.MaxLength);

        // Check every expert's data before the first (expensive) model load.
        var uses = context.Models.Select(model => Calibration.Use(model, m, maxLength, scorer)).ToArray();

        var watch = Stopwatch.StartNew();
        string[]? groups = null;
        string? groupsFrom = null;
        var rows = new double[context.Models.Count][];
        long samplesUsed = 0, tokens = 0, skipped = 0;
        for (var i = 0; i < context.Models.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var expert = context.Models[i];
            var data = expert.Data!;
            var limit = uses[i].MaxLength;
            using var model = context.Runtime.Load(
                expert.ModelPath,
                new ModelLoadOptions(context.Device, ScalarType.Float32, RequiresGrad: true) { MaxMemoryBytes = context.MaxMemoryBytes },
                cancellationToken);
            var weights = model.NamedWeights;
            var modelGroups = Calibration.GroupsInModelOrder(weights.Select(w => w.Name));
            if (groups is null)
            {
                groups = modelGroups;
                groupsFrom = expert.Name;
            }
            else if (!groups.SequenceEqual(modelGroups, StringComparer.Ordinal))
            {
                throw new InvalidOperationException(
                    $"scorer '{scorer}': expert '{expert.Name}' has layer groups [{string.Join(", ", modelGroups)}], " +
                    $"expert '{groupsFrom}' has [{string.Join(", ", groups)}]; experts must share one architecture.");
            }
            var groupIndex = groups.Select((g, k) => (g, k)).ToDictionary(p => p.g, p => p.k, StringComparer.Ordinal);
            var weightGroups = weights.Select(w => groupIndex[LayerGroups.Of(w.Name)]).ToArray();

            var sums = new double[groups.Length];
            var used = 0;
            using var scratch = new GradientScratch(weights.Select(w => w.Weight.numel()).DefaultIfEmpty(0).Max());
            var encoded = new List<(int Index, TokenizedSample Sample, int LossTokens)>();
            for (var s = 0; s < uses[i].Samples.Count; s++)
            {
                var sample = model.Tokenizer.Encode(uses[i].Samples[s], limit);
                var lossTokens = Calibration.LossTokenCount(sample);
                if (lossTokens == 0)
                {
                    LogSkippedSample(context.Logger, scorer, expert.Name, s);
                    skipped++;
                    continue;
                }
                encoded.Add((s, sample, lossTokens));
            }
            if (model is ILayerwiseGradients layerwise && encoded.Count > 0)
            {
                // Each weight's statistic is taken as soon as (a piece of) its gradient exists, one block at a time; a
                // model streamed under a memory budget reads each block once per group of samples.
                IReadOnlyList<double> losses;
                using (no_grad())
                using (var scope = NewDisposeScope())
                {
                    losses = layerwise.BackwardLayerwise(
                        encoded.Select(e => e.Sample).ToArray(),
                        (_, k, weight, gradient) => sums[weightGroups[k]] += scratch.Statistic(weight, gradient, statistic),
                        cancellationToken);
                }
                for (var e = 0; e < encoded.Count; e++)
                {
                    if (!double.IsFinite(losses[e]))
                    {
                        throw new InvalidOperationException(
                            $"scorer '{scorer}': expert '{expert.Name}' gives a non-finite loss ({losses[e]}) on calibration sample {encoded[e].Index} of '{data.SourcePath}'.");
                    }
                    used++;
                    tokens += encoded[e].LossTokens;
                }
            }
            else
            {
                foreach (var (s, sample, lossTokens) in encoded)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    model.ZeroGradients();
                    using (var scope = NewDisposeScope())
                    {
                        var loss = model.Loss(sample);
                        if (loss.numel() != 1 || !loss.requires_grad)
                        {
                            throw new InvalidOperationException(
                                $"scorer '{scorer}': the runtime's loss for expert '{expert.Name}' is {(loss.numel() != 1 ? "not a scalar" : "not differentiable (was the model loaded with RequiresGrad?)")}.");
                        }
                        var value = loss.to_type(ScalarType.Float64).item<double>();
                        if (!double.IsFinite(value))
                        {
                            throw new InvalidOperationException(
                                $"scorer '{scorer}': expert '{expert.Name}' gives a non-finite loss ({value}) on calibration sample {s} of '{data.SourcePath}'.");
                        }
                        loss.backward();
                    }
                    // The activations of this sample are gone; only the weights' gradients remain.
                    using (no_grad())
                    using (var scope = NewDisposeScope())
                    {
                        for (var k = 0; k < weights.Count; k++)
                        {
                            sums[weightGroups[k]] += weights[k].Weight.grad is { } gradient ? scratch.Statistic(weights[k].Weight, gradient, statistic) : 0;
                        }
                    }
                    used++;
                    tokens += lossTokens;
                }
            }
            model.ZeroGradients();
            if (used == 0)
            {
                throw new InvalidOperationException(
                    $"scorer '{scorer}': none of expert '{expert.Name}''s calibration samples has a token to score (all shorter than two tokens or without response tokens) in '{data.SourcePath}'.");
            }
            for (var g = 0; g < sums.Length; g++)
            {
                sums[g] /= used;
            }
            rows[i] = sums;
            samplesUsed += used;
            LogExpertScored(context.Logger, scorer, expert.Name, used, watch.Elapsed.TotalSeconds);
        }

        var details = new Dictionary<string, double>
        {
            ["samples"] = samplesUsed,
            ["skipped_samples"] = skipped,
            ["tokens"] = tokens,
            ["seconds"] = watch.Elapsed.TotalSeconds,
        };
        Calibration.Describe(details, uses);
        return new ScoreTable(scorer, ScorerKind.TaskSpecific, context.Models.Select(e => e.Name).ToArray(), groups!, rows) { Details = details };
    }

    [LoggerMessage(EventId = 8111, Level = LogLevel.Warning, Message = "{Scorer}: calibration sample {Sample} of expert {Expert} has no token to score; skipped")]
    private static partial void LogSkippedSample(ILogger logger, string scorer, string expert, int sample);

    [LoggerMessage(EventId = 8112, Level = LogLevel.Information, Message = "{Scorer}: expert {Expert} scored on {Samples} samples ({Seconds:F1} s so far)")]
    private static partial void LogExpertScored(ILogger logger, string scorer, string expert, int samples, double seconds);

    /// <summary>
    /// Largest piece of a weight reduced at once: 1 Mi elements (4 MiB in FP32; its sums are per 4096-element row
    /// anyway, so the chunk size does not change the result), small beside a streamed model's memory budget; settable for tests.
    /// </summary>
    internal static long ChunkElements { get; set; } = 1L << 20;

    /// <summary>
    /// One flat buffer as large as the largest weight, capped at <see cref="ChunkElements"/> (larger weights, such as a
    /// big vocabulary's embeddings, are reduced chunk by chunk), made on the first gradient's device and dtype and reused
    /// for every weight and sample, so that the per-sample statistic costs no fresh allocation.
    /// </summary>
    private sealed class GradientScratch(long largestElements) : IDisposable
    {
        private Tensor? _buffer;

        /// <summary>The statistic of one weight's gradient (or a piece of it), summed over its entries.</summary>
        public double Statistic(Tensor weight, Tensor grad, GradientStatistic statistic)
        {
            if (_buffer is null && largestElements > 0 && grad.is_contiguous())
            {
                using var scope = NewDisposeScope();
                _buffer = empty(Math.Min(largestElements, ChunkElements), grad.dtype, grad.device).DetachFromDisposeScope();
            }
            if (_buffer is null || grad.dtype != _buffer.dtype || grad.device_type != _buffer.device_type || grad.device_index != _buffer.device_index || !grad.is_contiguous() || !weight.is_contiguous() || grad.dtype != weight.dtype || weight.device_type != grad.device_type)
            {
                // Unusual layout: allocate for this weight rather than fail.
                var product = statistic == GradientStatistic.WeightTimesGradient ? (weight * grad).abs() : grad * grad;
                return DoubleSums.Total(product.reshape(-1));
            }
            var flatGrad = grad.view(-1);
            var flatWeight = weight.view(-1);
            var count = flatGrad.numel();
            var total = 0.0;
            for (long start = 0; start < count; start += _buffer.numel())
            {
                var length = Math.Min(_buffer.numel(), count - start);
                var work = _buffer.narrow(0, 0, length);
                work.copy_(flatGrad.narrow(0, start, length));
                if (statistic == GradientStatistic.WeightTimesGradient)
                {
                    work.mul_(flatWeight.narrow(0, start, length)).abs_();
                }
                else
                {
                    work.mul_(work);
                }
                total += DoubleSums.Total(work);
            }
            return total;
        }

        public void Dispose() => _buffer?.Dispose();
    }
}
