using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Runtime.Tokenization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Model;

/// <summary>
/// A decoder-only causal LM on TorchSharp with Hugging Face weight names: Llama, Mistral, Qwen2/3, Gemma 2, Phi-3
/// (<see cref="LlamaConfig.SupportedModelTypes"/>). Forward passes run in a dispose scope, so a
/// call's activations are freed when its result (and, for <see cref="Loss"/>, the autograd graph) is disposed.
/// </summary>
public sealed partial class LlamaModel : ICausalLanguageModel, ILayerwiseGradients
{
    private static readonly Dictionary<string, string> SaveMetadata = new(StringComparer.Ordinal) { ["format"] = "pt" };

    private readonly IReadOnlyList<(string Name, Tensor Weight)> _namedWeights;
    private Dictionary<IntPtr, int>? _weightIndex;
    private bool _disposed;

    private LlamaModel(string modelPath, LlamaConfig config, TextTokenizerBase tokenizer, LlamaNetwork network, Device device, ScalarType dtype, bool requiresGrad)
    {
        ModelPath = modelPath;
        Config = config;
        TextTokenizer = tokenizer;
        Network = network;
        Device = device;
        Dtype = dtype;
        RequiresGrad = requiresGrad;
        _namedWeights = network.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList();
    }

    public string ModelPath { get; }

    public LlamaConfig Config { get; }

    /// <summary>The TorchSharp module (for optimizers: <c>Network.parameters()</c>; forward gives logits with autograd).</summary>
    public LlamaNetwork Network { get; }

    public Device Device { get; }

    public ScalarType Dtype { get; }

    public bool RequiresGrad { get; }

    public int VocabularySize => Config.VocabSize;

    public int LayerCount => Config.NumHiddenLayers;

    public ITextTokenizer Tokenizer => TextTokenizer;

    /// <summary>The tokenizer with its BOS/PAD ids and vocabulary size.</summary>
    public TextTokenizerBase TextTokenizer { get; }

    public IReadOnlyList<(string Name, Tensor Weight)> NamedWeights => _namedWeights;

    /// <summary>The trainable parameters, in Hugging Face order (tied weight once).</summary>
    public IEnumerable<Parameter> Parameters => Network.parameters();

    /// <summary>Loads config.json, the safetensors weights and the tokenizer of <paramref name="modelPath"/>.</summary>
    public static LlamaModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        ArgumentNullException.ThrowIfNull(options);
        logger ??= NullLogger.Instance;
        if (!Directory.Exists(modelPath))
        {
            throw new DirectoryNotFoundException($"Model folder not found: {modelPath}");
        }
        var config = LlamaConfig.Load(Path.Combine(modelPath, "config.json"));
        var tokenizer = TokenizerLoader.Load(modelPath, config);
        var device = ResolveDevice(options.Device);
        var dtype = CheckDtype(options.Dtype);
        var model = new LlamaModel(modelPath, config, tokenizer, new LlamaNetwork(config, dtype, device, options.RequiresGrad), device, dtype, options.RequiresGrad);
        try
        {
            using var weights = OpenWeights(modelPath);
            model.LoadWeights(weights, cancellationToken, logger);
            if (config.SlidingWindow is { } window)
            {
                var sliding = Enumerable.Range(0, config.NumHiddenLayers).Count(l => config.WindowOf(l) is not null);
                LogSlidingWindow(logger, window, sliding, config.NumHiddenLayers);
            }
            LogLoaded(logger, modelPath, config.NumHiddenLayers, config.HiddenSize, config.VocabSize, dtype.ToString(), device.ToString());
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A freshly initialised model (Hugging Face init: linear and embedding weights ~ N(0, 0.02), biases 0, norms 1),
    /// deterministic for <paramref name="seed"/> on any device.
    /// </summary>
    public static LlamaModel CreateRandom(LlamaConfig config, TextTokenizerBase tokenizer, long seed, ModelLoadOptions? options = null, string modelPath = "")
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tokenizer);
        config.Validate();
        if (tokenizer.VocabularySize > config.VocabSize)
        {
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabularySize} ids but vocab_size is {config.VocabSize}.", nameof(tokenizer));
        }
        options ??= new ModelLoadOptions(RequiresGrad: true);
        var device = ResolveDevice(options.Device);
        var dtype = CheckDtype(options.Dtype);
        var model = new LlamaModel(modelPath, config, tokenizer, new LlamaNetwork(config, dtype, device, options.RequiresGrad), device, dtype, options.RequiresGrad);
        using var generator = new Generator(unchecked((ulong)seed), new Device(DeviceType.CPU));
        using var noGrad = no_grad();
        foreach (var (name, weight) in model._namedWeights)
        {
            using var scope = NewDisposeScope();
            if (name.EndsWith("norm.weight", StringComparison.Ordinal))
            {
                // Gemma's norms scale by 1 + weight: their identity is 0 (Qwen3's per-head q/k norms scale by weight).
                weight.fill_(config.GemmaNorms && !name.EndsWith("_norm.weight", StringComparison.Ordinal) ? 0.0 : 1.0);
            }
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
            {
                weight.zero_();
            }
            else
            {
                weight.copy_(normal(0.0, 0.02, weight.shape, ScalarType.Float32, generator: generator));
            }
        }
        return model;
    }

    /// <summary>
    /// Adds a LoRA adapter (rank <paramref name="rank"/>, update scale <paramref name="alpha"/> / rank) to every linear map
    /// of the model whose weight name <paramref name="targets"/> accepts, and returns the adapters' parameters (the
    /// ones to train; the model's own weights are left as they are). <see cref="MergeLowRankAdapters"/> folds them in.
    /// </summary>
    public IReadOnlyList<Parameter> AttachLowRankAdapters(int rank, double alpha, long seed, Func<string, bool> targets)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
        if (!(alpha > 0) || double.IsInfinity(alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "The LoRA alpha must be positive.");
        }
        using var generator = new Generator(unchecked((ulong)seed), new Device(DeviceType.CPU));
        var parameters = new List<Parameter>();
        var seen = new HashSet<LinearMap>(ReferenceEqualityComparer.Instance);
        foreach (var (name, module) in Network.named_modules())
        {
            // TorchSharp lists a module once per path that reaches it; each map gets one adapter.
            if (module is LinearMap map && seen.Add(map) && targets(name + ".weight"))
            {
                var adapter = map.Attach(rank, alpha / rank, generator);
                parameters.Add(adapter.Down);
                parameters.Add(adapter.Up);
            }
        }
        if (parameters.Count == 0)
        {
            throw new ArgumentException("No linear map of the model matches the LoRA targets.", nameof(targets));
        }
        return parameters;
    }

    /// <summary>Folds every LoRA adapter into its weight (<c>W += alpha/r * B A</c>) and removes it; <paramref name="keep"/> false discards them.</summary>
    public void MergeLowRankAdapters(bool keep = true)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var module in Network.modules())
        {
            if (module is LinearMap map)
            {
                map.Detach(keep);
            }
        }
    }

    /// <summary>Logits <c>[B,T,V]</c> in eval mode without autograd, on the model's device.</summary>
    public Tensor Forward(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = PrepareIds(inputIds);
        return Network.forward(ids).MoveToOuterDisposeScope();
    }

    /// <summary>Mean next-token cross-entropy over the sample's loss-mask positions (autograd graph when <see cref="RequiresGrad"/>).</summary>
    public Tensor Loss(TokenizedSample sample)
    {
        ArgumentNullException.ThrowIfNull(sample);
        return LossBatch([sample]);
    }

    /// <summary>
    /// Mean next-token cross-entropy over every loss-mask position of a right-padded batch (the trainer's loss).
    /// Throws when no sample has a loss position.
    /// </summary>
    public Tensor LossBatch(IReadOnlyList<TokenizedSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (samples.Count == 0)
        {
            throw new ArgumentException("The batch is empty.", nameof(samples));
        }
        var (ids, length, positions, targets) = LossPositions(samples);
        using var scope = NewDisposeScope();
        using var grad = set_grad_enabled(RequiresGrad);
        var logits = LogitsAt(ids, positions, samples.Count, length);
        var loss = nn.functional.cross_entropy(logits, tensor(targets.ToArray(), ScalarType.Int64, Device));
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The next-token logits <c>[N, V]</c> at every loss-mask position of a right-padded batch, in the order of
    /// <see cref="LossBatch"/> (sample by sample, position by position; position t predicts token t + 1), with an
    /// autograd graph when <see cref="RequiresGrad"/>. Throws when no sample has a loss position.
    /// </summary>
    public Tensor LogitsAtLossPositions(IReadOnlyList<TokenizedSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (samples.Count == 0)
        {
            throw new ArgumentException("The batch is empty.", nameof(samples));
        }
        var (ids, length, positions, _) = LossPositions(samples);
        using var scope = NewDisposeScope();
        using var grad = set_grad_enabled(RequiresGrad);
        return LogitsAt(ids, positions, samples.Count, length).MoveToOuterDisposeScope();
    }

    private Tensor LogitsAt(long[] ids, List<long> positions, int batch, int length)
    {
        var input = tensor(ids, [batch, length], ScalarType.Int64, Device);
        var hidden = Network.Hidden(input).reshape(-1, Config.HiddenSize);
        var selected = hidden.index_select(0, tensor(positions.ToArray(), ScalarType.Int64, Device));
        return Network.Head(selected);
    }

    /// <inheritdoc/>
    public double BackwardLayerwise(TokenizedSample sample, Action<int, Tensor, Tensor> onGradient, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(onGradient);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!RequiresGrad)
        {
            throw new InvalidOperationException("BackwardLayerwise needs a model loaded with RequiresGrad.");
        }
        var (ids, length, positions, targets) = LossPositions([sample], TextTokenizer.PadTokenId, Config.VocabSize);
        return LayerwiseBackward.Run(this, tensor(ids, [1, length], ScalarType.Int64, Device), positions, targets, onGradient, cancellationToken);
    }

    /// <summary>Index of each weight in <see cref="NamedWeights"/>, by native handle.</summary>
    internal int WeightIndex(Tensor weight)
    {
        _weightIndex ??= _namedWeights.Select((w, i) => (w.Weight.Handle, i)).ToDictionary(p => p.Handle, p => p.i);
        return _weightIndex.TryGetValue(weight.Handle, out var index)
            ? index
            : throw new InvalidOperationException("A block weight is not among the model's named weights.");
    }

    /// <summary>The right-padded ids of <paramref name="samples"/> and their loss positions (row-major) and targets.</summary>
    private (long[] Ids, int Length, List<long> Positions, List<long> Targets) LossPositions(IReadOnlyList<TokenizedSample> samples) =>
        LossPositions(samples, TextTokenizer.PadTokenId, Config.VocabSize);

    /// <summary>The right-padded ids of <paramref name="samples"/> (padded with <paramref name="pad"/>), their loss positions (row-major) and targets; ids outside the vocabulary are refused.</summary>
    internal static (long[] Ids, int Length, List<long> Positions, List<long> Targets) LossPositions(IReadOnlyList<TokenizedSample> samples, int pad, int vocabulary)
    {
        var length = samples.Max(s => s.Length);
        var ids = new long[samples.Count * length];
        var positions = new List<long>();
        var targets = new List<long>();
        for (var b = 0; b < samples.Count; b++)
        {
            var sample = samples[b];
            if (sample.LossMask.Length != sample.Ids.Length)
            {
                throw new ArgumentException($"Sample {b} has {sample.Ids.Length} ids but {sample.LossMask.Length} loss-mask entries.", nameof(samples));
            }
            Array.Fill(ids, pad, b * length, length);
            for (var t = 0; t < sample.Length; t++)
            {
                var id = sample.Ids[t];
                if (id < 0 || id >= vocabulary)
                {
                    throw new ArgumentException($"Sample {b} token {t} has id {id}, outside the vocabulary of {vocabulary}.", nameof(samples));
                }
                ids[(b * length) + t] = id;
                if (t + 1 < sample.Length && sample.LossMask[t])
                {
                    positions.Add((b * length) + t);
                    targets.Add(sample.Ids[t + 1]);
                }
            }
        }
        if (positions.Count == 0)
        {
            throw new ArgumentException("No loss positions: every sample's loss mask is empty (is the prompt longer than max_length?).", nameof(samples));
        }
        return (ids, length, positions, targets);
    }

    public void ZeroGradients()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var parameter in Network.parameters())
        {
            using var gradient = parameter.grad;
            gradient?.zero_();
        }
    }

    /// <summary>Greedy decoding: appends up to <paramref name="maxNewTokens"/> argmax tokens, stopping after EOS (not returned).</summary>
    public IReadOnlyList<int> GenerateGreedy(IReadOnlyList<long> promptIds, int maxNewTokens, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (promptIds.Count == 0)
        {
            throw new ArgumentException("The prompt has no tokens.", nameof(promptIds));
        }
        var sequence = new List<long>(promptIds);
        var produced = new List<int>();
        using var noGrad = no_grad();
        for (var step = 0; step < maxNewTokens; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var input = tensor(sequence.ToArray(), [1, sequence.Count], ScalarType.Int64, Device);
            var hidden = Network.Hidden(input);
            var last = hidden.select(1, sequence.Count - 1);
            var next = (int)Network.Head(last).argmax(-1).cpu().item<long>();
            if (next == TextTokenizer.EosTokenId)
            {
                break;
            }
            produced.Add(next);
            sequence.Add(next);
        }
        return produced;
    }

    /// <summary>
    /// Writes <c>model.safetensors</c> (FP32, Hugging Face names, tied weight once) and <c>config.json</c> into
    /// <paramref name="directory"/>; also the tokenizer files when the tokenizer is a <see cref="WordLevelTokenizer"/>.
    /// </summary>
    public void Save(string directory, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Directory.CreateDirectory(directory);
        WriteWeights(Path.Combine(directory, ShardedSafeTensorsWriter.SingleFileName), cancellationToken);
        var config = Config with
        {
            BosTokenId = TextTokenizer.BosTokenId >= 0 ? TextTokenizer.BosTokenId : Config.BosTokenId,
            EosTokenId = TextTokenizer.EosTokenId >= 0 ? TextTokenizer.EosTokenId : Config.EosTokenId,
            PadTokenId = TextTokenizer.PadTokenId,
        };
        config.Save(directory);
        if (TextTokenizer is WordLevelTokenizer wordLevel)
        {
            wordLevel.Save(directory);
        }
    }

    /// <inheritdoc cref="Save(string, CancellationToken)"/>
    public Task SaveAsync(string directory, CancellationToken cancellationToken = default) =>
        Task.Run(() => Save(directory, cancellationToken), cancellationToken);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        Network.Dispose();
    }

    internal static Device ResolveDevice(string device)
    {
        var name = string.IsNullOrWhiteSpace(device) ? "cpu" : device.Trim().ToLowerInvariant();
        if (name == "auto")
        {
            return cuda.is_available() ? CUDA : CPU;
        }
        if (name.StartsWith("cuda", StringComparison.Ordinal) && !cuda.is_available())
        {
            throw new InvalidOperationException($"Device '{device}' was requested but CUDA is not available in this TorchSharp build or machine.");
        }
        if (name != "cpu" && !name.StartsWith("cuda", StringComparison.Ordinal))
        {
            throw new ArgumentException($"Unknown device '{device}': use cpu, cuda, cuda:N or auto.", nameof(device));
        }
        return new Device(name);
    }

    internal static ScalarType CheckDtype(ScalarType dtype) => dtype is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16
        ? dtype
        : throw new ArgumentException($"Compute dtype {dtype} is not a floating-point type.", nameof(dtype));

    private Tensor PrepareIds(Tensor inputIds)
    {
        if (inputIds.dim() != 2)
        {
            throw new ArgumentException($"Token ids must be [batch, sequence], got {inputIds.dim()} dimensions.", nameof(inputIds));
        }
        return inputIds.to(ScalarType.Int64, Device);
    }

    /// <summary>
    /// Opens the folder's weights with Core's <see cref="ModelFolder"/> (single file or validated index + shards). Folder
    /// or format problems become <see cref="InvalidDataException"/> carrying Core's message, which names the file,
    /// shard or tensor at fault; a folder with no weights at all is a <see cref="FileNotFoundException"/>.
    /// </summary>
    internal static ModelFolder OpenWeights(string modelPath)
    {
        var single = Path.Combine(modelPath, ShardedSafeTensorsWriter.SingleFileName);
        if (!File.Exists(single) && !File.Exists(Path.Combine(modelPath, ShardedSafeTensorsWriter.IndexFileName)))
        {
            throw new FileNotFoundException($"No weights in {modelPath}: expected {ShardedSafeTensorsWriter.SingleFileName} or {ShardedSafeTensorsWriter.IndexFileName}.", single);
        }
        try
        {
            return ModelFolder.Open(modelPath);
        }
        catch (Exception ex) when (ex is ModelFolderException or SafeTensorsFormatException)
        {
            throw new InvalidDataException($"{modelPath}: the safetensors weights cannot be used: {ex.Message}", ex);
        }
    }

    private void LoadWeights(ModelFolder weights, CancellationToken cancellationToken, ILogger logger)
    {
        using var noGrad = no_grad();
        var expected = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, weight) in _namedWeights)
        {
            cancellationToken.ThrowIfCancellationRequested();
            expected.Add(name);
            if (!weights.TryGetTensor(name, out var stored))
            {
                throw new InvalidDataException($"{ModelPath}: weight '{name}' is missing from the safetensors files.");
            }
            if (!TensorShape.SameAs(stored.Shape, weight.shape))
            {
                throw new InvalidDataException($"{ModelPath}: weight '{name}' has shape {TensorShape.Format(stored.Shape)} but config.json implies {TensorShape.Format(weight.shape)}.");
            }
            if (!stored.DType.IsFloatingPoint || stored.DType.ScalarType is not { } storedType)
            {
                throw new InvalidDataException($"{ModelPath}: weight '{name}' is stored as {stored.DType}; the runtime reads F32, F16, BF16 and F64 weights.");
            }
            if (weight.device_type == DeviceType.CPU && weight.dtype == storedType && weight.is_contiguous())
            {
                // Same dtype on the CPU: read the file straight into the parameter's memory, no staging tensor.
                ModelFolder.ReadInto(stored, 0, weight);
            }
            else
            {
                using var data = weights.ReadTensor(name);
                weight.copy_(data);
            }
        }
        var ignored = weights.Tensors.Where(t => !expected.Contains(t.Name)).Select(t => t.Name).ToList();
        if (ignored.Count > 0)
        {
            LogIgnoredTensors(logger, ignored.Count, ignored[0]);
        }
    }

    /// <summary>
    /// Writes every weight as F32 (sorted by name, <c>format: pt</c> metadata) with Core's <see cref="SafeTensorsWriter"/>
    /// into a temporary file that replaces <paramref name="path"/> only when complete.
    /// </summary>
    private void WriteWeights(string path, CancellationToken cancellationToken)
    {
        var temporary = path + ".tmp";
        File.Delete(temporary);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var tensors = _namedWeights
            .OrderBy(w => w.Name, StringComparer.Ordinal)
            .Select(w => (w.Name, Data: w.Weight.detach().to(ScalarType.Float32, CPU).contiguous()))
            .ToList();
        var plan = tensors.Select(t => new TensorPlanEntry(t.Name, SafeTensorsDType.F32, t.Data.shape)).ToList();
        try
        {
            using (var writer = new SafeTensorsWriter(temporary, plan, SaveMetadata, computeSha256: false))
            {
                foreach (var (name, data) in tensors)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    TensorBytes.ForEachSpan(data, (span, offset) => writer.WriteChunk(name, offset, span));
                }
                writer.Complete();
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    [LoggerMessage(EventId = 7101, Level = LogLevel.Information,
        Message = "sliding_window {Window} applies to {Sliding} of {Layers} layers on sequences longer than it; shorter sequences use full causal attention.")]
    private static partial void LogSlidingWindow(ILogger logger, int window, int sliding, int layers);

    [LoggerMessage(EventId = 7102, Level = LogLevel.Information, Message = "Loaded {Model}: {Layers} layers, hidden {Hidden}, vocab {Vocab}, {Dtype} on {Device}.")]
    private static partial void LogLoaded(ILogger logger, string model, int layers, int hidden, int vocab, string dtype, string device);

    [LoggerMessage(EventId = 7103, Level = LogLevel.Information, Message = "Ignored {Count} tensors the architecture does not use (for example {Example}).")]
    private static partial void LogIgnoredTensors(ILogger logger, int count, string example);
}
