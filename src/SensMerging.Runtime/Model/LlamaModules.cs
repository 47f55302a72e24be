using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Model;

/// <summary>A bias-free (optionally biased) linear map <c>y = x W^T (+ b)</c>, weight <c>[out, in]</c> as in Hugging Face.</summary>
internal sealed class LinearMap : nn.Module
{
    public LinearMap(string name, long inFeatures, long outFeatures, bool bias, ScalarType dtype, Device device, bool requiresGrad)
        : base(name)
    {
        Weight = new Parameter(zeros(outFeatures, inFeatures, dtype, device), requiresGrad);
        register_parameter("weight", Weight);
        if (bias)
        {
            Bias = new Parameter(zeros(outFeatures, dtype, device), requiresGrad);
            register_parameter("bias", Bias);
        }
    }

    public Parameter Weight { get; }

    public Parameter? Bias { get; }

    /// <summary>The low-rank adapter trained beside the frozen weight, or null.</summary>
    internal LowRankAdapter? Adapter { get; private set; }

    public Tensor Apply(Tensor input)
    {
        var output = nn.functional.linear(input, Weight, Bias);
        return Adapter is null ? output : output + Adapter.Apply(input);
    }

    /// <summary>Adds a low-rank adapter (the weight stays as it is; only the adapter is meant to be trained).</summary>
    internal LowRankAdapter Attach(int rank, double scale, Generator generator)
    {
        if (Adapter is not null)
        {
            throw new InvalidOperationException($"'{GetName()}' already has a low-rank adapter.");
        }
        Adapter = new LowRankAdapter(Weight.shape[1], Weight.shape[0], rank, scale, Weight.dtype, Weight.device, generator);
        return Adapter;
    }

    /// <summary>Folds the adapter into the weight (W += scale * B A) and drops it; <paramref name="keep"/> false drops it unmerged.</summary>
    internal void Detach(bool keep)
    {
        if (Adapter is null)
        {
            return;
        }
        if (keep)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            Weight.add_(Adapter.Delta());
        }
        Adapter.Dispose();
        Adapter = null;
    }
}

/// <summary>
/// A LoRA update <c>scale * B A</c> of a linear map (Hu et al. 2021): A <c>[r, in]</c> drawn uniformly in
/// +-1/sqrt(in) (PEFT's default), B <c>[out, r]</c> zero, so training starts from the unchanged map.
/// </summary>
internal sealed class LowRankAdapter : IDisposable
{
    private readonly double _scale;

    public LowRankAdapter(long inFeatures, long outFeatures, int rank, double scale, ScalarType dtype, Device device, Generator generator)
    {
        _scale = scale;
        var bound = 1.0 / Math.Sqrt(inFeatures);
        using (var scope = NewDisposeScope())
        {
            var a = (rand(rank, inFeatures, ScalarType.Float32, generator: generator) * (2 * bound)) - bound;
            Down = new Parameter(a.to(dtype, device).DetachFromDisposeScope(), requires_grad: true);
        }
        Up = new Parameter(zeros(outFeatures, rank, dtype, device), requires_grad: true);
    }

    /// <summary>A <c>[r, in]</c>.</summary>
    public Parameter Down { get; }

    /// <summary>B <c>[out, r]</c>.</summary>
    public Parameter Up { get; }

    public Tensor Apply(Tensor input) => nn.functional.linear(nn.functional.linear(input, Down), Up) * _scale;

    /// <summary>The full-rank update <c>scale * B A</c> <c>[out, in]</c>.</summary>
    public Tensor Delta() => matmul(Up, Down) * _scale;

    public void Dispose()
    {
        Down.Dispose();
        Up.Dispose();
    }
}

/// <summary>
/// Root-mean-square layer norm: <c>x / sqrt(mean(x^2) + eps) * weight</c>; Gemma's variant (<paramref name="offset"/>)
/// computes in float32 and scales by <c>1 + weight</c>.
/// </summary>
internal sealed class RmsNorm : nn.Module
{
    private readonly double _eps;
    private readonly bool _offset;

    public RmsNorm(string name, long size, double eps, ScalarType dtype, Device device, bool requiresGrad, bool offset = false)
        : base(name)
    {
        _eps = eps;
        _offset = offset;
        Weight = new Parameter(offset ? zeros(size, dtype, device) : ones(size, dtype, device), requiresGrad);
        register_parameter("weight", Weight);
    }

    public Parameter Weight { get; }

    public Tensor Apply(Tensor input)
    {
        if (_offset)
        {
            var x = input.to_type(ScalarType.Float32);
            var normed = x * rsqrt(x.pow(2).mean([-1L], keepdim: true) + _eps);
            return (normed * (Weight.to_type(ScalarType.Float32) + 1.0)).to_type(input.dtype);
        }
        var variance = input.pow(2).mean([-1L], keepdim: true);
        return input * rsqrt(variance + _eps) * Weight;
    }
}

/// <summary>
/// Grouped-query self-attention with rotary position embeddings (Hugging Face rotate_half convention); q/k/v as three
/// maps or Phi-3's fused <c>qkv_proj</c>, optional Qwen3 per-head q/k norms, Gemma 2's score scale and soft-capping.
/// </summary>
internal sealed class LlamaAttention : nn.Module
{
    private readonly long _heads;
    private readonly long _kvHeads;
    private readonly long _headDim;
    private readonly double? _scale;
    private readonly double? _softcap;

    public LlamaAttention(LlamaConfig config, ScalarType dtype, Device device, bool requiresGrad)
        : base("self_attn")
    {
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        _scale = config.QueryPreAttnScalar is { } scalar ? 1.0 / Math.Sqrt(scalar) : null;
        _softcap = config.AttnLogitSoftcapping;
        var bias = config.AttentionBias;
        var qkvBias = bias || config.QkvBias;
        if (config.FusedProjections)
        {
            QkvProj = new LinearMap("qkv_proj", config.HiddenSize, (_heads + (2 * _kvHeads)) * _headDim, qkvBias, dtype, device, requiresGrad);
            register_module("qkv_proj", QkvProj);
        }
        else
        {
            QProj = new LinearMap("q_proj", config.HiddenSize, _heads * _headDim, qkvBias, dtype, device, requiresGrad);
            KProj = new LinearMap("k_proj", config.HiddenSize, _kvHeads * _headDim, qkvBias, dtype, device, requiresGrad);
            VProj = new LinearMap("v_proj", config.HiddenSize, _kvHeads * _headDim, qkvBias, dtype, device, requiresGrad);
            register_module("q_proj", QProj);
            register_module("k_proj", KProj);
            register_module("v_proj", VProj);
        }
        OProj = new LinearMap("o_proj", _heads * _headDim, config.HiddenSize, bias, dtype, device, requiresGrad);
        register_module("o_proj", OProj);
        if (config.QkNorm)
        {
            QNorm = new RmsNorm("q_norm", _headDim, config.RmsNormEps, dtype, device, requiresGrad);
            KNorm = new RmsNorm("k_norm", _headDim, config.RmsNormEps, dtype, device, requiresGrad);
            register_module("q_norm", QNorm);
            register_module("k_norm", KNorm);
        }
    }

    public LinearMap? QProj { get; }

    public LinearMap? KProj { get; }

    public LinearMap? VProj { get; }

    public LinearMap? QkvProj { get; }

    public LinearMap OProj { get; }

    public RmsNorm? QNorm { get; }

    public RmsNorm? KNorm { get; }

    /// <summary>Use libtorch's scaled_dot_product_attention (default) instead of explicit softmax(QK^T/sqrt(d))V.</summary>
    internal static bool UseFusedAttention { get; set; } = true;

    /// <summary>
    /// <paramref name="hidden"/> [B,T,H]; <paramref name="cos"/>/<paramref name="sin"/> [T,d]; <paramref name="blocked"/>
    /// [T,T] true where attention is not allowed; <paramref name="causalOnly"/> when that mask is plain causal.
    /// </summary>
    public Tensor Apply(Tensor hidden, Tensor cos, Tensor sin, Tensor blocked, bool causalOnly)
    {
        var batch = hidden.shape[0];
        var length = hidden.shape[1];
        Tensor q, k, v;
        if (QkvProj is not null)
        {
            var qkv = QkvProj.Apply(hidden);
            q = qkv.narrow(-1, 0, _heads * _headDim).view(batch, length, _heads, _headDim).transpose(1, 2);
            k = qkv.narrow(-1, _heads * _headDim, _kvHeads * _headDim).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
            v = qkv.narrow(-1, (_heads + _kvHeads) * _headDim, _kvHeads * _headDim).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
        }
        else if (QNorm is not null && KNorm is not null)
        {
            q = QNorm.Apply(QProj!.Apply(hidden).view(batch, length, _heads, _headDim)).transpose(1, 2);
            k = KNorm.Apply(KProj!.Apply(hidden).view(batch, length, _kvHeads, _headDim)).transpose(1, 2);
            v = VProj!.Apply(hidden).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
        }
        else
        {
            q = QProj!.Apply(hidden).view(batch, length, _heads, _headDim).transpose(1, 2);
            k = KProj!.Apply(hidden).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
            v = VProj!.Apply(hidden).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
        }
        q = q * cos + RotateHalf(q) * sin;
        k = k * cos + RotateHalf(k) * sin;
        var repeat = _heads / _kvHeads;
        if (repeat > 1)
        {
            // Query head h reads key/value head h / repeat (Hugging Face repeat_kv).
            k = k.unsqueeze(2).expand(batch, _kvHeads, repeat, length, _headDim).reshape(batch, _heads, length, _headDim);
            v = v.unsqueeze(2).expand(batch, _kvHeads, repeat, length, _headDim).reshape(batch, _heads, length, _headDim);
        }
        Tensor context;
        if (_scale is not null || _softcap is not null)
        {
            // Gemma 2: scores scaled by query_pre_attn_scalar^-0.5, soft-capped, then masked.
            var scores = matmul(q, k.transpose(-2, -1)) * (_scale ?? (1.0 / Math.Sqrt(_headDim)));
            if (_softcap is { } cap)
            {
                scores = (scores / cap).tanh() * cap;
            }
            scores = scores.masked_fill(blocked, double.NegativeInfinity);
            context = matmul(nn.functional.softmax(scores, -1), v);
        }
        else if (UseFusedAttention)
        {
            context = causalOnly
                ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
                : nn.functional.scaled_dot_product_attention(q, k, v, blocked.logical_not());
        }
        else
        {
            var scores = matmul(q, k.transpose(-2, -1)) * (1.0 / Math.Sqrt(_headDim));
            scores = scores.masked_fill(blocked, double.NegativeInfinity);
            context = matmul(nn.functional.softmax(scores, -1), v);
        }
        var attended = context.transpose(1, 2).reshape(batch, length, _heads * _headDim);
        return OProj.Apply(attended);
    }

    private Tensor RotateHalf(Tensor x)
    {
        var half = _headDim / 2;
        var first = x.narrow(-1, 0, half);
        var second = x.narrow(-1, half, half);
        return cat([second.neg(), first], -1);
    }
}

/// <summary>
/// Gated feed-forward: <c>down(act(gate(x)) * up(x))</c> with SiLU (SwiGLU) or tanh-approximated GELU (Gemma's GeGLU);
/// gate and up as two maps or Phi-3's fused <c>gate_up_proj</c> (gate rows first).
/// </summary>
internal sealed class LlamaMlp : nn.Module
{
    private readonly bool _gelu;
    private readonly long _intermediate;

    public LlamaMlp(LlamaConfig config, ScalarType dtype, Device device, bool requiresGrad)
        : base("mlp")
    {
        _gelu = config.HiddenAct == "gelu_pytorch_tanh";
        _intermediate = config.IntermediateSize;
        if (config.FusedProjections)
        {
            GateUpProj = new LinearMap("gate_up_proj", config.HiddenSize, 2L * config.IntermediateSize, false, dtype, device, requiresGrad);
            register_module("gate_up_proj", GateUpProj);
        }
        else
        {
            GateProj = new LinearMap("gate_proj", config.HiddenSize, config.IntermediateSize, false, dtype, device, requiresGrad);
            UpProj = new LinearMap("up_proj", config.HiddenSize, config.IntermediateSize, false, dtype, device, requiresGrad);
            register_module("gate_proj", GateProj);
            register_module("up_proj", UpProj);
        }
        DownProj = new LinearMap("down_proj", config.IntermediateSize, config.HiddenSize, false, dtype, device, requiresGrad);
        register_module("down_proj", DownProj);
    }

    public LinearMap? GateProj { get; }

    public LinearMap? UpProj { get; }

    public LinearMap? GateUpProj { get; }

    public LinearMap DownProj { get; }

    public Tensor Apply(Tensor hidden)
    {
        if (GateUpProj is not null)
        {
            var both = GateUpProj.Apply(hidden);
            return DownProj.Apply(Activate(both.narrow(-1, 0, _intermediate)) * both.narrow(-1, _intermediate, _intermediate));
        }
        return DownProj.Apply(Activate(GateProj!.Apply(hidden)) * UpProj!.Apply(hidden));
    }

    private Tensor Activate(Tensor gate) => _gelu ? GeluTanh(gate) : nn.functional.silu(gate);

    /// <summary>PyTorch's <c>gelu(approximate='tanh')</c>: <c>x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>.</summary>
    private static Tensor GeluTanh(Tensor x) =>
        x * 0.5 * (((x + (x.pow(3) * 0.044715)) * Math.Sqrt(2.0 / Math.PI)).tanh() + 1.0);
}

/// <summary>One pre-norm transformer block.</summary>
internal sealed class LlamaDecoderLayer : nn.Module
{
    public LlamaDecoderLayer(int index, LlamaConfig config, ScalarType dtype, Device device, bool requiresGrad)
        : base("layer" + index.ToString(System.Globalization.CultureInfo.InvariantCulture))
    {
        SelfAttention = new LlamaAttention(config, dtype, device, requiresGrad);
        Mlp = new LlamaMlp(config, dtype, device, requiresGrad);
        var gemma = config.GemmaNorms;
        InputLayerNorm = new RmsNorm("input_layernorm", config.HiddenSize, config.RmsNormEps, dtype, device, requiresGrad, gemma);
        PostAttentionLayerNorm = new RmsNorm("post_attention_layernorm", config.HiddenSize, config.RmsNormEps, dtype, device, requiresGrad, gemma);
        register_module("self_attn", SelfAttention);
        register_module("mlp", Mlp);
        register_module("input_layernorm", InputLayerNorm);
        register_module("post_attention_layernorm", PostAttentionLayerNorm);
        if (config.SandwichNorms)
        {
            PreFeedforwardLayerNorm = new RmsNorm("pre_feedforward_layernorm", config.HiddenSize, config.RmsNormEps, dtype, device, requiresGrad, gemma);
            PostFeedforwardLayerNorm = new RmsNorm("post_feedforward_layernorm", config.HiddenSize, config.RmsNormEps, dtype, device, requiresGrad, gemma);
            register_module("pre_feedforward_layernorm", PreFeedforwardLayerNorm);
            register_module("post_feedforward_layernorm", PostFeedforwardLayerNorm);
        }
        Window = config.WindowOf(index);
    }

    /// <summary>This layer's sliding attention window, or null for full causal attention.</summary>
    public int? Window { get; }

    /// <summary>Gemma 2: the norm before the feed-forward (then <see cref="PostAttentionLayerNorm"/> follows the attention).</summary>
    public RmsNorm? PreFeedforwardLayerNorm { get; }

    /// <summary>Gemma 2: the norm of the feed-forward's output, before the residual sum.</summary>
    public RmsNorm? PostFeedforwardLayerNorm { get; }

    public LlamaAttention SelfAttention { get; }

    public LlamaMlp Mlp { get; }

    public RmsNorm InputLayerNorm { get; }

    public RmsNorm PostAttentionLayerNorm { get; }

    public Tensor Apply(Tensor hidden, Tensor cos, Tensor sin, Tensor blocked, bool causalOnly)
    {
        if (PreFeedforwardLayerNorm is not null && PostFeedforwardLayerNorm is not null)
        {
            var residual = hidden + PostAttentionLayerNorm.Apply(SelfAttention.Apply(InputLayerNorm.Apply(hidden), cos, sin, blocked, causalOnly));
            return residual + PostFeedforwardLayerNorm.Apply(Mlp.Apply(PreFeedforwardLayerNorm.Apply(residual)));
        }
        var attended = hidden + SelfAttention.Apply(InputLayerNorm.Apply(hidden), cos, sin, blocked, causalOnly);
        return attended + Mlp.Apply(PostAttentionLayerNorm.Apply(attended));
    }
}

/// <summary>Token embedding table <c>[vocab, hidden]</c>.</summary>
internal sealed class TokenEmbedding : nn.Module
{
    public TokenEmbedding(long vocab, long hidden, ScalarType dtype, Device device, bool requiresGrad)
        : base("embed_tokens")
    {
        Weight = new Parameter(zeros(vocab, hidden, dtype, device), requiresGrad);
        register_parameter("weight", Weight);
    }

    public Parameter Weight { get; }

    public Tensor Apply(Tensor ids)
    {
        var shape = ids.shape;
        return Weight.index_select(0, ids.reshape(-1)).reshape(shape[0], shape[1], Weight.shape[1]);
    }
}

/// <summary>The decoder stack (Hugging Face <c>model.*</c>): embeddings, blocks, final norm.</summary>
internal sealed class LlamaBackbone : nn.Module
{
    public LlamaBackbone(LlamaConfig config, ScalarType dtype, Device device, bool requiresGrad)
        : base("model")
    {
        EmbedTokens = new TokenEmbedding(config.VocabSize, config.HiddenSize, dtype, device, requiresGrad);
        Layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers)
            .Select(i => new LlamaDecoderLayer(i, config, dtype, device, requiresGrad)).ToArray());
        Norm = new RmsNorm("norm", config.HiddenSize, config.RmsNormEps, dtype, device, requiresGrad, config.GemmaNorms);
        register_module("embed_tokens", EmbedTokens);
        register_module("layers", Layers);
        register_module("norm", Norm);
    }

    public TokenEmbedding EmbedTokens { get; }

    public ModuleList<LlamaDecoderLayer> Layers { get; }

    public RmsNorm Norm { get; }
}

/// <summary>
/// The whole causal LM as a TorchSharp module; parameter names are the Hugging Face names
/// (<c>model.embed_tokens.weight</c>, <c>model.layers.N.self_attn.q_proj.weight</c>, ..., <c>lm_head.weight</c>).
/// <c>forward</c> maps token ids <c>[B,T]</c> (int64) to logits <c>[B,T,V]</c> with autograd.
/// </summary>
public sealed class LlamaNetwork : nn.Module<Tensor, Tensor>
{
    private readonly LlamaBackbone _backbone;
    private readonly LinearMap? _lmHead;
    private readonly AttentionTables _tables;

    internal LlamaNetwork(LlamaConfig config, ScalarType dtype, Device device, bool requiresGrad)
        : base("LlamaForCausalLM")
    {
        Config = config;
        _backbone = new LlamaBackbone(config, dtype, device, requiresGrad);
        register_module("model", _backbone);
        if (!config.TieWordEmbeddings)
        {
            _lmHead = new LinearMap("lm_head", config.HiddenSize, config.VocabSize, false, dtype, device, requiresGrad);
            register_module("lm_head", _lmHead);
        }
        _tables = new AttentionTables(config);
    }

    public LlamaConfig Config { get; }

    /// <summary>The output projection's weight: lm_head, or the embedding table when tied.</summary>
    internal Tensor HeadWeight => _lmHead?.Weight ?? _backbone.EmbedTokens.Weight;

    /// <summary>Logits <c>[B,T,V]</c> (autograd follows the global grad mode).</summary>
    public override Tensor forward(Tensor input) => Head(Hidden(input));

    /// <summary>Final-norm hidden states <c>[B,T,H]</c>.</summary>
    public Tensor Hidden(Tensor ids)
    {
        var hidden = Embed(ids);
        for (var i = 0; i < _backbone.Layers.Count; i++)
        {
            hidden = ApplyLayer(i, hidden);
        }
        return FinalNorm(hidden);
    }

    /// <summary>The token embeddings <c>[B,T,H]</c> that enter the first block (Gemma: scaled by sqrt(hidden_size)).</summary>
    internal Tensor Embed(Tensor ids) => ScaleEmbeddings(Config, _backbone.EmbedTokens.Apply(ids));

    /// <summary>Gemma: embeddings times sqrt(hidden_size), the factor rounded to the activations' dtype; others unchanged.</summary>
    internal static Tensor ScaleEmbeddings(LlamaConfig config, Tensor hidden)
    {
        if (!config.GemmaNorms)
        {
            return hidden;
        }
        using var normalizer = tensor(Math.Sqrt(config.HiddenSize), hidden.dtype, hidden.device);
        return hidden * normalizer;
    }

    /// <summary>Block <paramref name="index"/> applied to <paramref name="hidden"/> <c>[B,T,H]</c>.</summary>
    internal Tensor ApplyLayer(int index, Tensor hidden) => _tables.Apply(_backbone.Layers[index], hidden);

    /// <summary>The final norm of the last block's output.</summary>
    internal Tensor FinalNorm(Tensor hidden) => _backbone.Norm.Apply(hidden);

    /// <summary>The embedding table's weight.</summary>
    internal Parameter EmbeddingWeight => _backbone.EmbedTokens.Weight;

    /// <summary>The final norm's weight.</summary>
    internal Parameter FinalNormWeight => _backbone.Norm.Weight;

    /// <summary>The untied output projection's weight, or null when the head is the embedding table.</summary>
    internal Parameter? LmHeadWeight => _lmHead?.Weight;

    /// <summary>The weights of block <paramref name="index"/>.</summary>
    internal IEnumerable<Parameter> LayerParameters(int index) => _backbone.Layers[index].parameters();

    /// <summary>Logits of hidden states (any leading shape, last dim H); Gemma 2 soft-caps them.</summary>
    public Tensor Head(Tensor hidden) => Logits(Config, hidden, HeadWeight);

    /// <summary>
    /// Logits of <paramref name="hidden"/> against output rows <paramref name="weight"/> <c>[V or a slice of V, H]</c>,
    /// soft-capped when the config says so (elementwise, so a slice of the vocabulary gives that slice of the logits).
    /// </summary>
    internal static Tensor Logits(LlamaConfig config, Tensor hidden, Tensor weight)
    {
        var logits = nn.functional.linear(hidden, weight);
        return config.FinalLogitSoftcapping is { } cap ? (logits / cap).tanh() * cap : logits;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _tables.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>
/// The rotary cos/sin tables <c>[L,d]</c> and blocked-attention masks <c>[L,L]</c> (plain causal, and one per distinct
/// sliding window) for the longest sequence seen so far, kept outside any dispose scope so that each block application
/// only takes views of them; shared by the in-memory network and the streamed model.
/// </summary>
internal sealed class AttentionTables : IDisposable
{
    private readonly LlamaConfig _config;
    private readonly double[] _inverseFrequencies;
    private readonly int[] _windows;
    private readonly Dictionary<int, Tensor> _windowBlocked = [];
    private Tensor? _cos;
    private Tensor? _sin;
    private Tensor? _blocked;
    private long _tableLength;

    public AttentionTables(LlamaConfig config)
    {
        _config = config;
        var d = config.HeadDim;
        _inverseFrequencies = new double[d / 2];
        for (var i = 0; i < d / 2; i++)
        {
            _inverseFrequencies[i] = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / d);
        }
        config.RopeScaling?.Apply(_inverseFrequencies);
        _windows = Enumerable.Range(0, config.NumHiddenLayers).Select(config.WindowOf).OfType<int>().Distinct().ToArray();
    }

    /// <summary><paramref name="layer"/> applied to <paramref name="hidden"/> <c>[B,T,H]</c> with the tables of its length.</summary>
    public Tensor Apply(LlamaDecoderLayer layer, Tensor hidden)
    {
        var length = hidden.shape[1];
        EnsureTables(length, hidden.dtype, hidden.device);
        var cos = _cos!.narrow(0, 0, length);
        var sin = _sin!.narrow(0, 0, length);
        var blocked = _blocked!.narrow(0, 0, length).narrow(1, 0, length);
        if (_config.LayerTypes is null)
        {
            var causalOnly = _config.SlidingWindow is not { } window || window >= length;
            return layer.Apply(hidden, cos, sin, blocked, causalOnly);
        }
        // Per-layer attention (Qwen2/3 layer_types, Gemma 2's alternating sliding and full layers).
        var layerCausalOnly = layer.Window is not { } layerWindow || layerWindow >= length;
        var layerBlocked = layerCausalOnly ? blocked : _windowBlocked[layer.Window!.Value].narrow(0, 0, length).narrow(1, 0, length);
        return layer.Apply(hidden, cos, sin, layerBlocked, layerCausalOnly);
    }

    public void Dispose() => DisposeTables();

    private void EnsureTables(long length, ScalarType dtype, Device device)
    {
        if (_cos is not null && _tableLength >= length && _cos.dtype == dtype && _cos.device == device)
        {
            return;
        }
        DisposeTables();
        var size = Math.Max(length, 64);
        var half = _inverseFrequencies.Length;
        var angles = new double[size * half * 2];
        for (var t = 0; t < size; t++)
        {
            for (var i = 0; i < half; i++)
            {
                var angle = t * _inverseFrequencies[i];
                angles[(t * half * 2) + i] = angle;
                angles[(t * half * 2) + half + i] = angle;
            }
        }
        using var scope = NewDisposeScope();
        var table = tensor(angles, [size, half * 2], ScalarType.Float64);
        _cos = table.cos().to(dtype, device).DetachFromDisposeScope();
        _sin = table.sin().to(dtype, device).DetachFromDisposeScope();
        var causal = ones(size, size, ScalarType.Bool).triu(1);
        if (_config.LayerTypes is not null)
        {
            // Layers choose their own window: plain causal here, one sliding mask per distinct window.
            _blocked = causal.to(device).DetachFromDisposeScope();
            foreach (var window in _windows)
            {
                _windowBlocked[window] = causal.logical_or(ones(size, size, ScalarType.Bool).tril(-window)).to(device).DetachFromDisposeScope();
            }
            _tableLength = size;
            return;
        }
        var blocked = causal;
        if (_config.SlidingWindow is { } slidingWindow && slidingWindow < size)
        {
            // Mistral: position i sees j only when i - j < window.
            blocked = blocked.logical_or(ones(size, size, ScalarType.Bool).tril(-slidingWindow));
        }
        _blocked = blocked.to(device).DetachFromDisposeScope();
        _tableLength = size;
    }

    private void DisposeTables()
    {
        _cos?.Dispose();
        _sin?.Dispose();
        _blocked?.Dispose();
        foreach (var mask in _windowBlocked.Values)
        {
            mask.Dispose();
        }
        _windowBlocked.Clear();
        _cos = _sin = _blocked = null;
        _tableLength = 0;
    }
}
