using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Zoo.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Training;

/// <summary>
/// Trains a <see cref="LlamaModel"/> on prompt/response samples: batches of right-padded samples with the loss on
/// the response tokens only (<see cref="LlamaModel.LossBatch"/>), AdamW, warm-up plus cosine decay, gradient clipping.
/// Every batch draws a task uniformly, then that task's next sample in a seeded per-task shuffle, so the run is
/// deterministic for a seed and mixed tasks are balanced whatever their pool sizes.
/// </summary>
public sealed class ZooTrainer
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
    public TrainingReport Train(
        LlamaModel model,
        IReadOnlyList<IReadOnlyList<TextSample>> pools,
        TrainingSettings settings,
        int maxLength,
        int seed,
        string label,
        IProgress<ZooProgress>? progress,
        CancellationToken cancellationToken)
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
        var previousThreads = get_num_threads();
        set_num_threads(settings.Threads);
        try
        {
            return Run(model, pools, settings, maxLength, seed, label, progress, cancellationToken);
        }
        finally
        {
            set_num_threads(previousThreads);
        }
    }

    private TrainingReport Run(
        LlamaModel model,
        IReadOnlyList<IReadOnlyList<TextSample>> pools,
        TrainingSettings settings,
        int maxLength,
        int seed,
        string label,
        IProgress<ZooProgress>? progress,
        CancellationToken cancellationToken)
    {
        var encoded = pools.Select(pool => pool.Select(s => model.TextTokenizer.Encode(s, maxLength)).ToArray()).ToArray();
        var sampler = new BalancedSampler(encoded.Select(p => p.Length).ToArray(), new Random(SeedMixer.Derive(seed, label + "/order")));
        var parameters = model.Parameters.ToList();
        using var optimizer = optim.AdamW(parameters, lr: settings.LearningRate, weight_decay: settings.WeightDecay);
        var losses = new List<double>(settings.Steps);
        var watch = Stopwatch.StartNew();
        var reportEvery = Math.Max(1, settings.Steps / 20);
        var batch = new TokenizedSample[settings.BatchSize];
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
            optimizer.zero_grad();
            using (var scope = NewDisposeScope())
            {
                var loss = model.LossBatch(batch);
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
            if ((step + 1) % reportEvery == 0 || step + 1 == settings.Steps)
            {
                var recent = losses.Skip(Math.Max(0, losses.Count - LossWindow)).Average();
                progress?.Report(new ZooProgress("train", label, step + 1, settings.Steps, recent));
                _logger.LogDebug("{Model}: step {Step}/{Total}, loss {Loss:F4}, lr {LearningRate:G3}", label, step + 1, settings.Steps, recent, learningRate);
            }
        }
        optimizer.zero_grad();
        watch.Stop();
        var initial = losses.Take(LossWindow).Average();
        var final = losses.Skip(Math.Max(0, losses.Count - LossWindow)).Average();
        _logger.LogInformation("Trained {Model}: {Steps} steps in {Seconds:F1} s, loss {Initial:F4} -> {Final:F4}.", label, settings.Steps, watch.Elapsed.TotalSeconds, initial, final);
        return new TrainingReport(settings.Steps, initial, final, watch.Elapsed.TotalSeconds, (long)settings.Steps * settings.BatchSize);
    }

    /// <summary>Picks a task uniformly, then that task's next sample in a per-task shuffle renewed every epoch.</summary>
    private sealed class BalancedSampler
    {
        private readonly Random _random;
        private readonly int[][] _orders;
        private readonly int[] _cursors;

        public BalancedSampler(int[] sizes, Random random)
        {
            _random = random;
            _orders = sizes.Select(n => Enumerable.Range(0, n).ToArray()).ToArray();
            _cursors = new int[sizes.Length];
            foreach (var order in _orders)
            {
                Shuffle(order);
            }
        }

        public (int Task, int Index) Next()
        {
            var task = _orders.Length == 1 ? 0 : _random.Next(_orders.Length);
            var order = _orders[task];
            if (_cursors[task] == order.Length)
            {
                Shuffle(order);
                _cursors[task] = 0;
            }
            return (task, order[_cursors[task]++]);
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
}
