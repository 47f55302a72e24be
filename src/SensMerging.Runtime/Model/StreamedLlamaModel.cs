using System.Globalization;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Runtime.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Model;

/// <summary>
/// A model of the same architectures as <see cref="LlamaModel"/> that does not hold its weights: it streams them from the
/// folder's safetensors files block by block, for a memory budget smaller than the model
/// (<see cref="ModelLoadOptions.MaxMemoryBytes"/>). Only one block's weights (and, in the backward pass, their gradients)
/// and a slice of the vocabulary's rows are in memory at a time; the embedding rows of the samples' tokens are read
/// when needed.
/// </summary>
/// <remarks>
/// The several-sample <see cref="BackwardLayerwise(IReadOnlyList{TokenizedSample}, Action{int, int, Tensor, Tensor}, CancellationToken)"/>
/// takes as many samples per pass as their layer-boundary activations fit in the budget beside one block
/// (<see cref="StreamingPlan.SamplesPerPass"/>): a forward pass without autograd reads each block once and keeps
/// each sample's block inputs; the head's log-sum-exp is taken over vocabulary slices; then the head slices, the final
/// norm, each block from the last to the first (read again, recomputed with autograd per sample) and the embedding rows
/// are back-propagated, each gradient handed over in pieces and freed; no block's weights stay resident through the head
/// and the embedding rows (the modules give their storage back). A tied head's gradient rows for the sample's
/// own tokens are kept back (a few hundred rows) and handed with the embedding's gradient of those rows, their sum;
/// the rest of the head's rows are handed with those rows zeroed. Results equal the in-memory pass up to float rounding.
/// </remarks>
public sealed partial class StreamedLlamaModel : ICausalLanguageModel, ILayerwiseGradients
{
    private const string EmbeddingName = "model.embed_tokens.weight";
    private const string NormName = "model.norm.weight";
    private const string HeadName = "lm_head.weight";

    private readonly ModelFolder _weights;
    private readonly AttentionTables _tables;
    private readonly Dictionary<int, LlamaDecoderLayer> _layerModules = [];
    private readonly RmsNorm _finalNorm;
    private readonly List<(string Name, Tensor Weight)> _namedWeights = [];
    private readonly Dictionary<string, int> _weightIndex = new(StringComparer.Ordinal);
    private readonly ILogger _logger;
    private bool _disposed;

    private StreamedLlamaModel(string modelPath, LlamaConfig config, TextTokenizerBase tokenizer, ModelFolder weights, Device device, ScalarType dtype, long budget, ILogger logger)
    {
        ModelPath = modelPath;
        Config = config;
        TextTokenizer = tokenizer;
        _weights = weights;
        Device = device;
        Dtype = dtype;
        BudgetBytes = budget;
        _logger = logger;
        Plan = new StreamingPlan(config, dtype switch { ScalarType.Float64 => 8, ScalarType.Float32 => 4, _ => 2 });
        _tables = new AttentionTables(config);
        _finalNorm = Unscoped(() => new RmsNorm("norm", config.HiddenSize, config.RmsNormEps, dtype, device, requiresGrad: true, config.GemmaNorms));
    }

    public string ModelPath { get; }

    public LlamaConfig Config { get; }

    public Device Device { get; }

    public ScalarType Dtype { get; }

    /// <summary>The memory budget the passes plan for (bytes).</summary>
    public long BudgetBytes { get; }

    /// <summary>The memory arithmetic of this model.</summary>
    public StreamingPlan Plan { get; }

    public int VocabularySize => Config.VocabSize;

    public int LayerCount => Config.NumHiddenLayers;

    public ITextTokenizer Tokenizer => TextTokenizer;

    public TextTokenizerBase TextTokenizer { get; }

    /// <summary>
    /// The weights' names, shapes and dtypes in Hugging Face order (tied head once): tensors on the <c>meta</c> device,
    /// which hold no data. The values are read from the files during a pass.
    /// </summary>
    public IReadOnlyList<(string Name, Tensor Weight)> NamedWeights => _namedWeights;

    /// <summary>Number of samples per streamed pass in the last backward pass (for logs and tests).</summary>
    public int LastSamplesPerPass { get; private set; }

    /// <summary>At most this many vocabulary rows per head slice, below what the plan allows (tests: slices that do not divide the vocabulary).</summary>
    internal int? HeadRowsLimit { get; set; }

    /// <summary>Vocabulary rows per head slice in the last pass (for logs and tests).</summary>
    public int LastHeadRows { get; private set; }

    /// <summary>
    /// Opens <paramref name="modelPath"/> for streaming under <paramref name="budgetBytes"/>: config, tokenizer and the
    /// weights' headers (every expected tensor checked for presence, shape and a floating-point dtype); throws naming the
    /// numbers when the budget cannot hold one block.
    /// </summary>
    public static StreamedLlamaModel Open(string modelPath, ModelLoadOptions options, long budgetBytes, CancellationToken cancellationToken, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var config = LlamaConfig.Load(Path.Combine(modelPath, "config.json"));
        var tokenizer = TokenizerLoader.Load(modelPath, config);
        BoundedHeap.Apply(logger);
        var device = LlamaModel.ResolveDevice(options.Device);
        var dtype = LlamaModel.CheckDtype(options.Dtype);
        var weights = LlamaModel.OpenWeights(modelPath);
        StreamedLlamaModel? model = null;
        try
        {
            model = new StreamedLlamaModel(modelPath, config, tokenizer, weights, device, dtype, budgetBytes, logger);
            model.Plan.CheckStreamable(budgetBytes, modelPath);
            model.Describe(cancellationToken);
            LogStreaming(logger, modelPath, StreamingPlan.Mb(model.Plan.WeightBytes), StreamingPlan.Mb(budgetBytes), StreamingPlan.Mb(model.Plan.LayerBytes));
            return model;
        }
        catch
        {
            if (model is null)
            {
                weights.Dispose();
            }
            else
            {
                model.Dispose();
            }
            throw;
        }
    }

    /// <summary>Logits <c>[B,T,V]</c> without autograd: each block read once for the whole batch, the head slice by slice.</summary>
    public Tensor Forward(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (inputIds.dim() != 2)
        {
            throw new ArgumentException($"Token ids must be [batch, sequence], got {inputIds.dim()} dimensions.", nameof(inputIds));
        }
        using var noGrad = no_grad();
        var batch = inputIds.shape[0];
        var length = inputIds.shape[1];
        long[] ids;
        using (var onCpu = inputIds.to(ScalarType.Int64, CPU).contiguous())
        {
            ids = onCpu.data<long>().ToArray();
        }
        var hidden = EmbedRows(ids, batch, length, out var rows);
        rows.Dispose();
        try
        {
            for (var i = 0; i < LayerCount; i++)
            {
                var layer = LoadLayer(i, CancellationToken.None);
                using var scope = NewDisposeScope();
                var next = _tables.Apply(layer, hidden).DetachFromDisposeScope();
                hidden.Dispose();
                hidden = next;
            }
            ReleaseBlocks();
            using (var scope = NewDisposeScope())
            {
                var normed = _finalNorm.Apply(hidden).DetachFromDisposeScope();
                hidden.Dispose();
                hidden = normed;
            }
            var logits = empty([batch, length, Config.VocabSize], Dtype, Device);
            try
            {
                var sliceRows = Math.Min(Plan.HeadRows((int)length, (int)(batch * length)), HeadRowsLimit ?? int.MaxValue);
                ForEachHeadSlice(sliceRows, (start, weight) =>
                {
                    using var scope = NewDisposeScope();
                    logits.narrow(2, start, weight.shape[0]).copy_(LlamaNetwork.Logits(Config, hidden, weight));
                }, CancellationToken.None);
                return logits;
            }
            catch
            {
                logits.Dispose();
                throw;
            }
        }
        finally
        {
            hidden.Dispose();
        }
    }

    /// <summary>Mean next-token cross-entropy over the sample's loss positions, without autograd (a streamed model keeps no graph).</summary>
    public Tensor Loss(TokenizedSample sample)
    {
        ArgumentNullException.ThrowIfNull(sample);
        var (ids, length, positions, targets) = LlamaModel.LossPositions([sample], TextTokenizer.PadTokenId, Config.VocabSize);
        using var scope = NewDisposeScope();
        using var logits = Forward(tensor(ids, [1, length], ScalarType.Int64));
        var selected = logits.reshape(-1, Config.VocabSize).index_select(0, tensor(positions.ToArray(), ScalarType.Int64, Device));
        return nn.functional.cross_entropy(selected, tensor(targets.ToArray(), ScalarType.Int64, Device)).MoveToOuterDisposeScope();
    }

    /// <summary>Nothing to clear: a streamed model accumulates no gradients.</summary>
    public void ZeroGradients() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>
    /// Not offered: a streamed model hands a weight's gradient in pieces (a whole vocabulary-sized gradient would not fit
    /// the budget); use the several-sample overload.
    /// </summary>
    public double BackwardLayerwise(TokenizedSample sample, Action<int, Tensor, Tensor> onGradient, CancellationToken cancellationToken) =>
        throw new NotSupportedException(
            $"{ModelPath} is streamed under a memory budget and hands gradients in pieces: use BackwardLayerwise over a list of samples (contract 1.5).");

    /// <inheritdoc/>
    public IReadOnlyList<double> BackwardLayerwise(IReadOnlyList<TokenizedSample> samples, Action<int, int, Tensor, Tensor> onPiece, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(onPiece);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var states = new SampleState[samples.Count];
        for (var s = 0; s < samples.Count; s++)
        {
            var (ids, length, positions, targets) = LlamaModel.LossPositions([samples[s]], TextTokenizer.PadTokenId, Config.VocabSize);
            states[s] = new SampleState(s, ids, length, positions.ToArray(), targets.ToArray());
        }
        var losses = new double[samples.Count];
        var maxTokens = states.Length == 0 ? 1 : states.Max(x => x.Length);
        var maxLoss = states.Length == 0 ? 1 : states.Max(x => x.Positions.Length);
        var perPass = Plan.SamplesPerPass(BudgetBytes, maxTokens, maxLoss, Math.Max(samples.Count, 1), ModelPath);
        LastSamplesPerPass = perPass;
        for (var first = 0; first < states.Length; first += perPass)
        {
            var group = states.Skip(first).Take(perPass).ToArray();
            try
            {
                Pass(group, onPiece, cancellationToken);
                foreach (var state in group)
                {
                    losses[state.Index] = state.Loss;
                }
            }
            finally
            {
                foreach (var state in group)
                {
                    state.Dispose();
                }
            }
        }
        return losses;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var layer in _layerModules.Values)
        {
            layer.Dispose();
        }
        _finalNorm.Dispose();
        _tables.Dispose();
        foreach (var (_, weight) in _namedWeights)
        {
            weight.Dispose();
        }
        _weights.Dispose();
    }

    /// <summary>One streamed pass over <paramref name="group"/>: forward keeping block inputs, head, blocks backward, embedding rows.</summary>
    private void Pass(SampleState[] group, Action<int, int, Tensor, Tensor> onPiece, CancellationToken cancellationToken)
    {
        void Hand(SampleState state, string name, Tensor weight, Tensor gradient)
        {
            using var noGrad = no_grad();
            onPiece(state.Index, _weightIndex[name], weight, gradient);
        }

        var layers = LayerCount;
        var hiddenSize = Config.HiddenSize;
        // Forward without autograd, each block read once for the group.
        using (no_grad())
        {
            foreach (var state in group)
            {
                state.Boundaries = new Tensor?[layers + 1];
                state.Boundaries[0] = EmbedRows(state.Ids, 1, state.Length, out var rows);
                state.Rows = rows;
            }
            for (var i = 0; i < layers; i++)
            {
                var layer = LoadLayer(i, cancellationToken);
                foreach (var state in group)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = NewDisposeScope();
                    state.Boundaries![i + 1] = _tables.Apply(layer, state.Boundaries[i]!).DetachFromDisposeScope();
                }
            }
            ReleaseBlocks();
            foreach (var state in group)
            {
                using var scope = NewDisposeScope();
                state.Selected = _finalNorm.Apply(state.Boundaries![layers]!).reshape(-1, hiddenSize)
                    .index_select(0, tensor(state.Positions, ScalarType.Int64, Device)).DetachFromDisposeScope();
                state.TargetTensor = tensor(state.Targets, ScalarType.Int64, Device).DetachFromDisposeScope();
            }
        }

        // Head, first sweep: each sample's log-sum-exp over the vocabulary and its target logits, slice by slice.
        var maxLoss = group.Max(x => x.Positions.Length);
        var headRows = Math.Min(Plan.HeadRows(group.Max(x => x.Length), maxLoss), HeadRowsLimit ?? int.MaxValue);
        LastHeadRows = headRows;
        foreach (var state in group)
        {
            state.Max = full([state.Positions.Length], double.NegativeInfinity, ScalarType.Float64, Device).DetachFromDisposeScope();
            state.SumExp = zeros([state.Positions.Length], ScalarType.Float64, Device).DetachFromDisposeScope();
            state.TargetLogit = zeros([state.Positions.Length], ScalarType.Float64, Device).DetachFromDisposeScope();
        }
        using (no_grad())
        {
            ForEachHeadSlice(headRows, (start, weight) =>
            {
                var end = start + weight.shape[0];
                foreach (var state in group)
                {
                    using var scope = NewDisposeScope();
                    var logits = LlamaNetwork.Logits(Config, state.Selected!, weight).to_type(ScalarType.Float64);
                    var sliceMax = logits.amax([1L]);
                    var newMax = maximum(state.Max!, sliceMax);
                    state.SumExp!.mul_((state.Max! - newMax).exp_()).add_((logits - newMax.unsqueeze(1)).exp_().sum(1L));
                    state.Max!.copy_(newMax);
                    var inSlice = state.TargetTensor!.ge(start).logical_and_(state.TargetTensor!.lt(end));
                    var local = (state.TargetTensor! - start).clamp_(0, weight.shape[0] - 1);
                    state.TargetLogit!.add_(logits.gather(1, local.unsqueeze(1)).squeeze(1).mul_(inSlice));
                }
            }, cancellationToken);
        }
        foreach (var state in group)
        {
            using var scope = NewDisposeScope();
            var lse = state.Max!.add(state.SumExp!.log());
            state.Loss = (lse - state.TargetLogit!).mean().item<double>();
            state.LogSumExp = lse.to_type(Dtype).unsqueeze(1).DetachFromDisposeScope();
            state.SelectedGradient = zeros_like(state.Selected!).DetachFromDisposeScope();
            if (Config.TieWordEmbeddings)
            {
                state.TiedRows = zeros_like(state.Rows!).DetachFromDisposeScope();
            }
        }

        // Head, second sweep: each slice's gradient per sample (softmax minus one-hot, by autograd through soft-capping).
        using (set_grad_enabled(true))
        {
            var headName = Config.TieWordEmbeddings ? EmbeddingName : HeadName;
            ForEachHeadSlice(headRows, (start, weight) =>
            {
                var rows = weight.shape[0];
                var end = start + rows;
                using var leaf = weight.detach().requires_grad_(true);
                foreach (var state in group)
                {
                    using var scope = NewDisposeScope();
                    var input = state.Selected!.detach().requires_grad_(true);
                    var logits = LlamaNetwork.Logits(Config, input, leaf);
                    var count = state.Positions.Length;
                    var probabilities = (logits - state.LogSumExp!).exp().sum();
                    var inSlice = state.TargetTensor!.ge(start).logical_and_(state.TargetTensor!.lt(end));
                    var local = (state.TargetTensor! - start).clamp_(0, rows - 1);
                    var targetSum = (logits.gather(1, local.unsqueeze(1)).squeeze(1) * inSlice.to_type(logits.dtype)).sum();
                    var surrogate = (probabilities - targetSum) / count;
                    var gradients = autograd.grad([surrogate], [input, leaf]);
                    state.SelectedGradient!.add_(gradients[0]);
                    var gradient = gradients[1];
                    if (state.TiedRows is not null)
                    {
                        // Rows of the sample's own tokens: kept back, summed with their embedding gradient later.
                        var (local2, owners) = state.RowsInSlice(start, end);
                        if (local2.Length > 0)
                        {
                            var localIndex = tensor(local2, ScalarType.Int64, Device);
                            var ownerIndex = tensor(owners, ScalarType.Int64, Device);
                            state.TiedRows.index_add_(0, ownerIndex, gradient.index_select(0, localIndex), 1.0);
                            gradient.index_fill_(0, localIndex, 0.0);
                        }
                    }
                    Hand(state, headName, weight, gradient);
                }
            }, cancellationToken);
        }

        // Final norm: gradient of its weight and of the last block's output.
        using (set_grad_enabled(true))
        {
            foreach (var state in group)
            {
                using var scope = NewDisposeScope();
                var input = state.Boundaries![layers]!.detach().requires_grad_(true);
                var selected = _finalNorm.Apply(input).reshape(-1, hiddenSize).index_select(0, tensor(state.Positions, ScalarType.Int64, Device));
                var gradients = autograd.grad([selected], [input, _finalNorm.Weight], [state.SelectedGradient!]);
                Hand(state, NormName, _finalNorm.Weight, gradients[1]);
                state.Upstream = gradients[0].DetachFromDisposeScope();
                state.ReleaseBoundary(layers);
                state.ReleaseHead();
            }
        }

        // Blocks, last to first: read again, recomputed with autograd per sample.
        for (var i = layers - 1; i >= 0; i--)
        {
            var layer = LoadLayer(i, cancellationToken);
            var prefix = LayerPrefix(i);
            var named = layer.named_parameters().Select(p => (Name: prefix + p.name, Weight: (Tensor)p.parameter)).ToArray();
            var weights = named.Select(p => p.Weight).ToArray();
            foreach (var state in group)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var grad = set_grad_enabled(true);
                using var scope = NewDisposeScope();
                var input = state.Boundaries![i]!.detach().requires_grad_(true);
                var output = _tables.Apply(layer, input);
                var gradients = autograd.grad([output], [input, .. weights], [state.Upstream!]);
                for (var k = 0; k < weights.Length; k++)
                {
                    Hand(state, named[k].Name, weights[k], gradients[k + 1]);
                    gradients[k + 1].Dispose();
                }
                state.Upstream!.Dispose();
                state.Upstream = gradients[0].DetachFromDisposeScope();
                if (i > 0)
                {
                    state.ReleaseBoundary(i);
                }
            }
        }

        ReleaseBlocks();
        // Embedding rows of each sample's tokens (the only rows with a gradient from the input side).
        foreach (var state in group)
        {
            using var grad = set_grad_enabled(true);
            using var scope = NewDisposeScope();
            var rows = state.Rows!.detach().requires_grad_(true);
            var embedded = LlamaNetwork.ScaleEmbeddings(Config, rows.index_select(0, tensor(state.Inverse, ScalarType.Int64, Device)).unsqueeze(0));
            var gradient = autograd.grad([embedded], [rows], [state.Upstream!])[0];
            if (state.TiedRows is not null)
            {
                gradient.add_(state.TiedRows);
            }
            Hand(state, EmbeddingName, state.Rows!, gradient);
        }
    }

    /// <summary>The embeddings <c>[B,T,H]</c> of <paramref name="ids"/>, reading only the rows of the distinct tokens (returned in <paramref name="rows"/>).</summary>
    private Tensor EmbedRows(long[] ids, long batch, long length, out Tensor rows)
    {
        var distinct = ids.Distinct().Order().ToArray();
        var where = new Dictionary<long, long>(distinct.Length);
        for (var u = 0; u < distinct.Length; u++)
        {
            where[distinct[u]] = u;
        }
        rows = ReadRows(EmbeddingName, distinct);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var inverse = tensor(ids.Select(id => where[id]).ToArray(), [batch * length], ScalarType.Int64, Device);
        return LlamaNetwork.ScaleEmbeddings(Config, rows.index_select(0, inverse).reshape(batch, length, Config.HiddenSize)).DetachFromDisposeScope();
    }

    /// <summary>Rows <paramref name="rowIds"/> of a 2-D weight, in the compute dtype on the device.</summary>
    private Tensor ReadRows(string name, long[] rowIds)
    {
        var stored = _weights.GetTensor(name);
        var width = stored.Shape[1];
        var rowBytes = stored.ByteLength / stored.Shape[0];
        using var scope = NewDisposeScope();
        var staging = empty([width], stored.DType.RequireScalarType());
        var result = empty([rowIds.Length, width], Dtype, Device);
        using (no_grad())
        {
            for (var u = 0; u < rowIds.Length; u++)
            {
                ModelFolder.ReadInto(stored, rowIds[u] * rowBytes, staging);
                result[u].copy_(staging);
            }
        }
        return result.DetachFromDisposeScope();
    }

    /// <summary>
    /// Calls <paramref name="onSlice"/> with (first row, rows) for consecutive slices of at most <paramref name="sliceRows"/>
    /// rows of the output projection (lm_head, or the embedding table when tied), each read from the files into one
    /// reused buffer; the slice tensor is only valid during the call.
    /// </summary>
    private void ForEachHeadSlice(int sliceRows, Action<long, Tensor> onSlice, CancellationToken cancellationToken)
    {
        var stored = _weights.GetTensor(Config.TieWordEmbeddings ? EmbeddingName : HeadName);
        var vocabulary = stored.Shape[0];
        var width = stored.Shape[1];
        var rowBytes = stored.ByteLength / vocabulary;
        var storedType = stored.DType.RequireScalarType();
        var rows = Math.Min(sliceRows, vocabulary);
        using var buffer = empty([rows, width], Dtype, Device);
        using var staging = storedType == Dtype && Device.type == DeviceType.CPU ? null : empty([rows, width], storedType);
        for (long start = 0; start < vocabulary; start += rows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var count = Math.Min(rows, vocabulary - start);
            using var slice = buffer.narrow(0, 0, count);
            using (no_grad())
            {
                if (staging is null)
                {
                    ModelFolder.ReadInto(stored, start * rowBytes, slice);
                }
                else
                {
                    using var stage = staging.narrow(0, 0, count);
                    ModelFolder.ReadInto(stored, start * rowBytes, stage);
                    slice.copy_(stage);
                }
            }
            onSlice(start, slice);
        }
    }

    /// <summary>The module for block <paramref name="index"/> (one per distinct attention window, reused) with that block's weights read in.</summary>
    private LlamaDecoderLayer LoadLayer(int index, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var key = Config.WindowOf(index) ?? -1;
        if (!_layerModules.TryGetValue(key, out var layer))
        {
            layer = Unscoped(() => new LlamaDecoderLayer(index, Config, Dtype, Device, requiresGrad: true));
            _layerModules[key] = layer;
        }
        // One block's weights resident at a time: another attention window's module gives its storage back first.
        ReleaseBlocks(except: layer);
        var prefix = LayerPrefix(index);
        using var noGrad = no_grad();
        foreach (var (name, parameter) in layer.named_parameters())
        {
            if (parameter.numel() == 0)
            {
                using var storage = empty([.. _weights.GetTensor(prefix + name).Shape], Dtype, Device);
                parameter.set_(storage);
            }
            ReadWhole(prefix + name, parameter);
        }
        return layer;
    }

    /// <summary>
    /// Gives back the storage of every cached block module's weights (but <paramref name="except"/>'s): each parameter is
    /// set to an empty tensor, and <see cref="LoadLayer"/> gives it fresh storage of its shape again. Called between
    /// the phases that need no block (the head, the embedding rows), whose working set the plan reserves in the block's place.
    /// </summary>
    private void ReleaseBlocks(LlamaDecoderLayer? except = null)
    {
        using var noGrad = no_grad();
        foreach (var layer in _layerModules.Values)
        {
            if (ReferenceEquals(layer, except))
            {
                continue;
            }
            foreach (var (_, parameter) in layer.named_parameters())
            {
                if (parameter.numel() > 0)
                {
                    using var none = empty([0], parameter.dtype, parameter.device);
                    parameter.set_(none);
                }
            }
        }
    }

    /// <summary>
    /// A module made outside whatever dispose scope the caller is in (a scorer calls passes inside its own scopes): its
    /// parameters live until the model is disposed.
    /// </summary>
    private static T Unscoped<T>(Func<T> make)
        where T : nn.Module
    {
        using var scope = NewDisposeScope();
        var module = make();
        foreach (var parameter in module.parameters())
        {
            scope.Detach(parameter);
        }
        return module;
    }

    private static string LayerPrefix(int index) => "model.layers." + index.ToString(CultureInfo.InvariantCulture) + ".";

    /// <summary>Reads a whole stored tensor into <paramref name="destination"/> (its shape checked when the model was opened).</summary>
    private void ReadWhole(string name, Tensor destination)
    {
        var stored = _weights.GetTensor(name);
        if (destination.device_type == DeviceType.CPU && destination.dtype == stored.DType.ScalarType && destination.is_contiguous())
        {
            ModelFolder.ReadInto(stored, 0, destination);
            return;
        }
        using var staging = empty([.. stored.Shape], stored.DType.RequireScalarType());
        ModelFolder.ReadInto(stored, 0, staging);
        destination.copy_(staging);
    }

    /// <summary>Checks every expected weight in the files and lists them as data-less <c>meta</c> tensors in Hugging Face order.</summary>
    private void Describe(CancellationToken cancellationToken)
    {
        var hidden = (long)Config.HiddenSize;
        var expected = new List<(string Name, long[] Shape)> { (EmbeddingName, [Config.VocabSize, hidden]) };
        using (var probe = new LlamaDecoderLayer(0, Config, Dtype, new Device(DeviceType.META), requiresGrad: false))
        {
            var shapes = probe.named_parameters().Select(p => (p.name, p.parameter.shape)).ToArray();
            for (var i = 0; i < LayerCount; i++)
            {
                expected.AddRange(shapes.Select(p => (LayerPrefix(i) + p.name, p.shape)));
            }
        }
        expected.Add((NormName, [hidden]));
        if (!Config.TieWordEmbeddings)
        {
            expected.Add((HeadName, [Config.VocabSize, hidden]));
        }
        var meta = new Device(DeviceType.META);
        foreach (var (name, shape) in expected)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (!_weights.TryGetTensor(name, out var stored))
            {
                throw new InvalidDataException($"{ModelPath}: weight '{name}' is missing from the safetensors files.");
            }
            if (!TensorShape.SameAs(stored.Shape, shape))
            {
                throw new InvalidDataException($"{ModelPath}: weight '{name}' has shape {TensorShape.Format(stored.Shape)} but config.json implies {TensorShape.Format(shape)}.");
            }
            if (!stored.DType.IsFloatingPoint || stored.DType.ScalarType is null)
            {
                throw new InvalidDataException($"{ModelPath}: weight '{name}' is stored as {stored.DType}; the runtime reads F32, F16, BF16 and F64 weights.");
            }
            _weightIndex[name] = _namedWeights.Count;
            using var scope = NewDisposeScope();
            _namedWeights.Add((name, empty(shape, Dtype, meta).DetachFromDisposeScope()));
        }
        using var noGrad = no_grad();
        ReadWhole(NormName, _finalNorm.Weight);
    }

    [LoggerMessage(EventId = 7104, Level = LogLevel.Information,
        Message = "Streaming {Model} block by block: its weights take {Weights}, over the memory budget of {Budget} (one block: {Block}).")]
    private static partial void LogStreaming(ILogger logger, string model, string weights, string budget, string block);

    /// <summary>What a streamed pass keeps for one sample between its phases.</summary>
    private sealed class SampleState(int index, long[] ids, int length, long[] positions, long[] targets) : IDisposable
    {
        private long[]? _distinct;

        public int Index { get; } = index;

        public long[] Ids { get; } = ids;

        public int Length { get; } = length;

        public long[] Positions { get; } = positions;

        public long[] Targets { get; } = targets;

        public double Loss { get; set; }

        public Tensor?[]? Boundaries { get; set; }

        /// <summary>Embedding rows of the sample's distinct tokens, sorted by id.</summary>
        public Tensor? Rows { get; set; }

        /// <summary>The head's gradient rows of the sample's distinct tokens (tied head only).</summary>
        public Tensor? TiedRows { get; set; }

        public Tensor? Selected { get; set; }

        public Tensor? SelectedGradient { get; set; }

        public Tensor? TargetTensor { get; set; }

        public Tensor? Max { get; set; }

        public Tensor? SumExp { get; set; }

        public Tensor? TargetLogit { get; set; }

        public Tensor? LogSumExp { get; set; }

        public Tensor? Upstream { get; set; }

        /// <summary>Each token's row in <see cref="Rows"/>.</summary>
        public long[] Inverse
        {
            get
            {
                var distinct = Distinct;
                return Ids.Select(id => (long)Array.BinarySearch(distinct, id)).ToArray();
            }
        }

        private long[] Distinct => _distinct ??= Ids.Distinct().Order().ToArray();

        /// <summary>The sample's distinct token ids in [start, end): their row within the slice and their row in <see cref="Rows"/>.</summary>
        public (long[] Local, long[] Owners) RowsInSlice(long start, long end)
        {
            var distinct = Distinct;
            var local = new List<long>();
            var owners = new List<long>();
            for (var u = 0; u < distinct.Length; u++)
            {
                if (distinct[u] >= start && distinct[u] < end)
                {
                    local.Add(distinct[u] - start);
                    owners.Add(u);
                }
            }
            return (local.ToArray(), owners.ToArray());
        }

        public void ReleaseBoundary(int index)
        {
            Boundaries![index]?.Dispose();
            Boundaries[index] = null;
        }

        public void ReleaseHead()
        {
            foreach (var t in new[] { Selected, SelectedGradient, TargetTensor, Max, SumExp, TargetLogit, LogSumExp })
            {
                t?.Dispose();
            }
            Selected = SelectedGradient = TargetTensor = Max = SumExp = TargetLogit = LogSumExp = null;
        }

        public void Dispose()
        {
            if (Boundaries is not null)
            {
                for (var i = 0; i < Boundaries.Length; i++)
                {
                    ReleaseBoundary(i);
                }
            }
            ReleaseHead();
            Rows?.Dispose();
            TiedRows?.Dispose();
            Upstream?.Dispose();
            Rows = TiedRows = Upstream = null;
        }
    }
}
