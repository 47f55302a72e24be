using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Zoo.Tasks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Training;

/// <summary>
/// Trains a <see cref="LlamaModel"/> on prompt/response samples: batches of right-padded samples with the loss on
/// the response tokens only (<see cref="LlamaModel.LossBatch"/>), AdamW, warm-up plus cosine decay, gradient clipping.
/// Every sample of a batch draws a pool (uniformly, or by the given pool weights), then that pool's next sample in a
/// seeded per-pool shuffle, so the run is deterministic for a seed and the mix does not depend on the pool sizes.
/// </summary>
public sealed partial class ZooTrainer
{
    private const int LossWindow = 10;
    private readonly ILogger _logger;

    public ZooTrainer(ILogger? logger = null)
    {
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Trains <paramref name="model"/> in place (it must have been created or loaded with gradients on).</summary>
    /// <param name="model">The model.</param>
    /// <param name="pools">The training samples of each task (each non-empty).</param>
    /// <param name="settings">Optimizer and schedule.</param>
    /// <param name="maxLength">Tokens per sample after truncation.</param>
    /// <param name="seed">Seed of the sampling order.</param>
    /// <param name="label">The model's name, for progress and logs.</param>
    /// <param name="progress">Optional progress sink (about 20 reports per run).</param>
    /// <param name="cancellationToken">Stops between steps.</param>
    /// <param name="poolWeights">How often each pool is drawn (relative, one per pool); null draws the pools uniformly.</param>
    /// <param name="distillation">
    /// Null: every sample's loss is its cross-entropy. Otherwise a share of every batch is off-task samples whose loss is
    /// the KL divergence from a frozen teacher (<see cref="OffTaskDistillation"/>).
    /// </param>
    public TrainingReport Train(
        LlamaModel model,
        IReadOnlyList<IReadOnlyList<TextSample>> pools,
        TrainingSettings settings,
        int maxLength,
        int seed,
        string label,
        IProgress<ZooProgress>? progress,
        CancellationToken cancellationToken,
        IReadOnlyList<double>? poolWeights = null,
        OffTaskDistillation? distillation = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(pools);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        if (!model.RequiresGrad)
        {
            throw new ArgumentException($"Model '{label}' was loaded without gradients; load it with RequiresGrad = true to train it.", nameof(model));
        }
        if (pools.Count == 0 || pools.Any(p => p.Count == 0))
        {
            throw new ArgumentException($"Model '{label}': every task pool must hold at least one training sample.", nameof(pools));
        }
        var weights = poolWeights?.ToArray() ?? Enumerable.Repeat(1.0, pools.Count).ToArray();
        if (weights.Length != pools.Count || weights.Any(w => !(w >= 0) || double.IsInfinity(w)) || !(weights.Sum() > 0))
        {
            throw new ArgumentException(
                $"Model '{label}': pool weights must be one finite non-negative number per pool ({pools.Count}) with a positive sum.", nameof(poolWeights));
        }
        if (distillation is not null)
        {
            distillation.Validate();
            _ = distillation.SamplesPerBatch(settings.BatchSize);
        }
        var previousThreads = get_num_threads();
        set_num_threads(settings.Threads);
        try
        {
            return Run(model, pools, weights, settings, maxLength, seed, label, progress, cancellationToken, distillation);
        }
        finally
        {
            set_num_threads(previousThreads);
        }
    }

    private TrainingReport Run(
        LlamaModel model,
        IReadOnlyList<IReadOnlyList<TextSample>> pools,
        double[] weights,
        TrainingSettings settings,
        int maxLength,
        int seed,
        string label,
        IProgress<ZooProgress>? progress,
        CancellationToken cancellationToken,
        OffTaskDistillation? distillation)
    {
        var encoded = pools.Select(pool => pool.Select(s => model.TextTokenizer.Encode(s, maxLength)).ToArray()).ToArray();
        var sampler = new BalancedSampler(encoded.Select(p => p.Length).ToArray(), weights, new Random(SeedMixer.Derive(seed, label + "/order")));
        OffTaskBatches? offTask = null;
        if (distillation is not null)
        {
            var offEncoded = distillation.Pools.Select(pool => pool.Select(s => model.TextTokenizer.Encode(s, maxLength)).ToArray()).ToArray();
            var offSampler = new BalancedSampler(
                offEncoded.Select(p => p.Length).ToArray(),
                Enumerable.Repeat(1.0, offEncoded.Length).ToArray(),
                new Random(SeedMixer.Derive(seed, label + "/distill")));
            offTask = new OffTaskBatches(distillation, offSampler, offEncoded);
        }
        if (settings.LowRank > 0)
        {
            var adapters = model.AttachLowRankAdapters(settings.LowRank, settings.LowRankAlpha ?? settings.LowRank, SeedMixer.Derive(seed, label + "/lora"), settings.Trains);
            var trained = false;
            try
            {
                var report = Optimize(model, adapters, sampler, encoded, settings, label, progress, cancellationToken, offTask);
                trained = true;
                return report;
            }
            finally
            {
                model.MergeLowRankAdapters(keep: trained);
            }
        }
        var parameters = model.Parameters.Zip(model.NamedWeights).Where(p => settings.Trains(p.Second.Name)).Select(p => p.First).ToList();
        if (parameters.Count == 0)
        {
            throw new ArgumentException($"Model '{label}': every tensor is frozen ({string.Join(", ", settings.FrozenTensors ?? [])}); nothing would be trained.");
        }
        return Optimize(model, parameters, sampler, encoded, settings, label, progress, cancellationToken, offTask);
    }

    private TrainingReport Optimize(
        LlamaModel model,
        IReadOnlyList<Parameter> parameters,
        BalancedSampler sampler,
        TokenizedSample[][] encoded,
        TrainingSettings settings,
        string label,
        IProgress<ZooProgress>? progress,
        CancellationToken cancellationToken,
        OffTaskBatches? offTask)
    {
        // AnchorDecay replaces AdamW's decay toward zero by a decay toward the starting weights (applied after each step).
        var anchored = settings.AnchorDecay > 0;
        using var optimizer = optim.AdamW(parameters, lr: settings.LearningRate, weight_decay: anchored ? 0 : settings.WeightDecay);
        var anchors = anchored ? parameters.Select(p => p.detach().clone()).ToList() : null;
        var losses = new List<double>(settings.Steps);
        var watch = Stopwatch.StartNew();
        var reportEvery = Math.Max(1, settings.Steps / 20);
        var offCount = offTask?.Distillation.SamplesPerBatch(settings.BatchSize) ?? 0;
        var batch = new TokenizedSample[settings.BatchSize - offCount];
        var offBatch = new TokenizedSample[offCount];
        var klValues = new List<double>(offCount > 0 ? settings.Steps : 0);
        for (var step = 0; step < settings.Steps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var learningRate = settings.LearningRateAt(step);
            foreach (var group in optimizer.ParamGroups)
            {
                group.LearningRate = learningRate;
            }
            for (var b = 0; b < batch.Length; b++)
            {
                var (task, index) = sampler.Next();
                batch[b] = encoded[task][index];
            }
            for (var b = 0; b < offBatch.Length; b++)
            {
                var (pool, index) = offTask!.Sampler.Next();
                offBatch[b] = offTask.Samples[pool][index];
            }
            optimizer.zero_grad();
            using (var scope = NewDisposeScope())
            {
                var loss = model.LossBatch(batch);
                if (offBatch.Length > 0)
                {
                    // (n_task / B) * CE + Weight * (n_off / B) * KL(teacher || model) on the off-task samples.
                    var kl = OffTaskDistillation.KlToTeacher(model, offTask!.Distillation.Teacher, offBatch);
                    klValues.Add(kl.item<float>());
                    var total = (double)settings.BatchSize;
                    loss = (loss * (batch.Length / total)) + (kl * (offTask.Distillation.Weight * offBatch.Length / total));
                }
                loss.backward();
                var value = loss.item<float>();
                if (!float.IsFinite(value))
                {
                    throw new InvalidOperationException($"Training of '{label}' diverged at step {step}: loss is {value}. Lower the learning rate.");
                }
                losses.Add(value);
                nn.utils.clip_grad_norm_(parameters, settings.ClipNorm);
            }
            optimizer.step();
            if (anchors is not null)
            {
                PullTowardAnchors(parameters, anchors, settings.AnchorPullAt(step));
            }
            if ((step + 1) % reportEvery == 0 || step + 1 == settings.Steps)
            {
                var recent = losses.Skip(Math.Max(0, losses.Count - LossWindow)).Average();
                progress?.Report(new ZooProgress("train", label, step + 1, settings.Steps, recent));
                LogStep(_logger, label, step + 1, settings.Steps, recent, learningRate);
            }
        }
        optimizer.zero_grad();
        if (anchors is not null)
        {
            foreach (var anchor in anchors)
            {
                anchor.Dispose();
            }
        }
        watch.Stop();
        var initial = losses.Take(LossWindow).Average();
        var final = losses.Skip(Math.Max(0, losses.Count - LossWindow)).Average();
        LogTrained(_logger, label, settings.Steps, watch.Elapsed.TotalSeconds, initial, final);
        if (klValues.Count > 0)
        {
            LogOffTaskKl(_logger, label, klValues.Take(LossWindow).Average(), klValues.Skip(Math.Max(0, klValues.Count - LossWindow)).Average());
        }
        return new TrainingReport(settings.Steps, initial, final, watch.Elapsed.TotalSeconds, (long)settings.Steps * settings.BatchSize);
    }

    /// <summary>theta &lt;- theta + pull * (theta_start - theta) for every trained tensor (pull 1 lands exactly on the start).</summary>
    private static void PullTowardAnchors(IReadOnlyList<Parameter> parameters, IReadOnlyList<Tensor> anchors, double pull)
    {
        if (!(pull > 0))
        {
            return;
        }
        using var noGrad = no_grad();
        for (var i = 0; i < parameters.Count; i++)
        {
            parameters[i].lerp_(anchors[i], pull);
        }
    }

    /// <summary>The off-task side of a distilled run: the settings, its sampler and its tokenized pools.</summary>
    private sealed record OffTaskBatches(OffTaskDistillation Distillation, BalancedSampler Sampler, TokenizedSample[][] Samples);

    /// <summary>Picks a pool by its weight, then that pool's next sample in a per-pool shuffle renewed every epoch.</summary>
    private sealed class BalancedSampler
    {
        private readonly Random _random;
        private readonly int[][] _orders;
        private readonly int[] _cursors;
        private readonly double[] _cumulative;
        private readonly bool _uniform;

        public BalancedSampler(int[] sizes, double[] weights, Random random)
        {
            _random = random;
            _uniform = weights.All(w => w == weights[0]);
            _cumulative = new double[weights.Length];
            var total = weights.Sum();
            double running = 0;
            for (var i = 0; i < weights.Length; i++)
            {
                running += weights[i] / total;
                _cumulative[i] = running;
            }
            _orders = sizes.Select(n => Enumerable.Range(0, n).ToArray()).ToArray();
            _cursors = new int[sizes.Length];
            foreach (var order in _orders)
            {
                Shuffle(order);
            }
        }

        public (int Task, int Index) Next()
        {
            var task = _orders.Length == 1 ? 0 : _uniform ? _random.Next(_orders.Length) : Weighted();
            var order = _orders[task];
            if (_cursors[task] == order.Length)
            {
                Shuffle(order);
                _cursors[task] = 0;
            }
            return (task, order[_cursors[task]++]);
        }

        private int Weighted()
        {
            var u = _random.NextDouble();
            for (var i = 0; i < _cumulative.Length - 1; i++)
            {
                if (u < _cumulative[i])
                {
                    return i;
                }
            }
            return _cumulative.Length - 1;
        }

        private void Shuffle(int[] order)
        {
            for (var i = order.Length - 1; i > 0; i--)
            {
                var j = _random.Next(i + 1);
                (order[i], order[j]) = (order[j], order[i]);
            }
        }
    }

    [LoggerMessage(EventId = 9101, Level = LogLevel.Debug, Message = "{Model}: step {Step}/{Total}, loss {Loss:F4}, lr {LearningRate:G3}")]
    private static partial void LogStep(ILogger logger, string model, int step, int total, double loss, double learningRate);

    [LoggerMessage(EventId = 9102, Level = LogLevel.Information, Message = "Trained {Model}: {Steps} steps in {Seconds:F1} s, loss {Initial:F4} -> {Final:F4}.")]
    private static partial void LogTrained(ILogger logger, string model, int steps, double seconds, double initial, double final);

    [LoggerMessage(EventId = 9103, Level = LogLevel.Information, Message = "{Model}: KL to the teacher on off-task samples {Initial:F4} -> {Final:F4}.")]
    private static partial void LogOffTaskKl(ILogger logger, string model, double initial, double final);
}
