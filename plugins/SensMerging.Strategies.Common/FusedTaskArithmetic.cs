using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// The CPU float32 form of <see cref="TaskArithmeticCore"/>: one pass over the elements computes every model's
/// sparsified delta in registers, the sign election and the sums, and writes the output; magnitude thresholds come
/// from a radix select over the deltas computed on the fly. Nothing of the tensor's size is allocated. Random drops
/// (DARE) use <see cref="CounterRandom"/> keyed by <c>Seed + modelIndex</c> and the element index.
/// </summary>
internal static unsafe class FusedTaskArithmetic
{
    /// <summary>Elements per parallel work item.</summary>
    private const long Chunk = 1L << 16;

    /// <summary>Runs the merge when every tensor is a contiguous CPU float32 tensor; false otherwise (nothing written).</summary>
    public static bool TryMerge(MergeTensorRequest request, TaskArithmeticVariant variant, TaskArithmeticSettings settings, Tensor baseTensor)
    {
        var count = request.Models.Count;
        var numel = request.Output.numel();
        if (numel == 0 || !NativeSpans.IsDirectFloat32(request.Output) || !NativeSpans.IsDirectFloat32(baseTensor) || baseTensor.numel() != numel)
        {
            return false;
        }
        for (var i = 0; i < count; i++)
        {
            if (!NativeSpans.IsDirectFloat32(request.Models[i]) || request.Models[i].numel() != numel)
            {
                return false;
            }
        }

        var kernel = new Kernel
        {
            Base = NativeSpans.Float32(baseTensor),
            Output = NativeSpans.Float32(request.Output),
            Models = new nint[count],
            Weights = new float[count],
            Lower = new float[count],
            Upper = new float[count],
            Scale = new float[count],
            RandomKey = new ulong[count],
            RandomThreshold = new uint[count],
            Random = variant.Sparsification == SparsificationMethod.Random,
            Consensus = variant.Consensus == ConsensusMethod.Sum,
            Normalize = settings.Normalize,
            Lambda = (float)settings.Lambda,
        };
        double weightSum = 0;
        for (var i = 0; i < count; i++)
        {
            var x = NativeSpans.Float32(request.Models[i]);
            kernel.Models[i] = (nint)x;
            kernel.Weights[i] = (float)settings.Weights[i];
            weightSum += settings.Weights[i];
            kernel.Lower[i] = float.NegativeInfinity;
            kernel.Upper[i] = float.PositiveInfinity;
            kernel.Scale[i] = 1f;
            kernel.RandomThreshold[i] = 1u << 24;
            Configure(ref kernel, i, variant, settings, x, kernel.Base, numel, request.Seed);
        }
        kernel.OutputScale = !kernel.Consensus && settings.Normalize && Math.Abs(weightSum) >= 1e-8
            ? (float)(settings.Lambda / weightSum)
            : (float)settings.Lambda;

        var chunks = (numel + Chunk - 1) / Chunk;
        if (chunks == 1)
        {
            kernel.Run(0, numel);
        }
        else
        {
            Parallel.For(0L, chunks, c => kernel.Run(c * Chunk, Math.Min(numel, (c + 1) * Chunk)));
        }
        return true;
    }

    private static void Configure(ref Kernel kernel, int i, TaskArithmeticVariant variant, TaskArithmeticSettings settings, float* x, float* b, long numel, long seed)
    {
        var density = settings.Densities[i];
        if (variant.Sparsification == SparsificationMethod.None || density >= 1.0)
        {
            return;
        }
        switch (variant.Sparsification)
        {
            case SparsificationMethod.Magnitude:
            {
                var keep = (long)Math.Floor(density * numel);
                if (keep <= 0)
                {
                    kernel.Scale[i] = 0f;
                    return;
                }
                kernel.Lower[i] = DeltaSelect.KthSmallestMagnitude(x, b, numel, numel - keep + 1);
                return;
            }
            case SparsificationMethod.MagnitudeOutliers:
            {
                var target = (long)Math.Floor(density * numel);
                var top = (long)Math.Floor(settings.Gammas[i] * numel);
                var bottom = numel - target - top;
                if (bottom < 0)
                {
                    top += bottom;
                    bottom = 0;
                }
                if (target <= 0 || numel - top <= bottom)
                {
                    kernel.Scale[i] = 0f;
                    return;
                }
                if (bottom > 0)
                {
                    kernel.Lower[i] = DeltaSelect.KthSmallestMagnitude(x, b, numel, bottom + 1);
                }
                if (top > 0)
                {
                    kernel.Upper[i] = DeltaSelect.KthSmallestMagnitude(x, b, numel, numel - top);
                }
                return;
            }
            case SparsificationMethod.Random:
                if (density <= 0)
                {
                    kernel.Scale[i] = 0f;
                    return;
                }
                kernel.RandomKey[i] = CounterRandom.StreamKey(seed + i);
                kernel.RandomThreshold[i] = CounterRandom.Threshold(density);
                kernel.Scale[i] = settings.Rescale ? (float)(1.0 / density) : 1f;
                return;
            case SparsificationMethod.None:
            default:
                return;
        }
    }

    private struct Kernel
    {
        public float* Base;
        public float* Output;
        public nint[] Models;
        public float[] Weights;
        public float[] Lower;
        public float[] Upper;
        public float[] Scale;
        public ulong[] RandomKey;
        public uint[] RandomThreshold;
        public bool Random;
        public bool Consensus;
        public bool Normalize;
        public float Lambda;
        public float OutputScale;

        public readonly void Run(long start, long end)
        {
            var count = Models.Length;
            Span<float> deltas = count <= 64 ? stackalloc float[count] : new float[count];
            for (var e = start; e < end; e++)
            {
                var b = Base[e];
                var sum = 0f;
                for (var i = 0; i < count; i++)
                {
                    var d = Delta(i, e, b);
                    deltas[i] = d;
                    sum += Weights[i] * d;
                }
                if (!Consensus)
                {
                    Output[e] = b + sum * OutputScale;
                    continue;
                }
                var elected = sum >= 0 ? 1f : -1f;
                var kept = 0f;
                var divisor = 0f;
                for (var i = 0; i < count; i++)
                {
                    var contribution = Weights[i] * deltas[i];
                    if (contribution * elected > 0)
                    {
                        kept += contribution;
                        divisor += Weights[i];
                    }
                }
                if (Normalize && divisor != 0)
                {
                    kept /= divisor;
                }
                Output[e] = b + Lambda * kept;
            }
        }

        private readonly float Delta(int i, long e, float b)
        {
            var scale = Scale[i];
            if (scale == 0f)
            {
                return 0f;
            }
            var d = ((float*)Models[i])[e] - b;
            var magnitude = MathF.Abs(d);
            if (magnitude < Lower[i] || magnitude > Upper[i])
            {
                return 0f;
            }
            if (Random && CounterRandom.Uniform24(RandomKey[i], e) >= RandomThreshold[i])
            {
                return 0f;
            }
            return d * scale;
        }
    }
}

/// <summary>Radix select over |x - b| computed on the fly (float32 bit patterns with the sign cleared order like magnitudes).</summary>
internal static unsafe class DeltaSelect
{
    public static float KthSmallestMagnitude(float* x, float* b, long numel, long k)
    {
        var remaining = k;
        var hist = new long[2048];
        for (long e = 0; e < numel; e++)
        {
            hist[Key(x[e] - b[e]) >> 20]++;
        }
        var b1 = (uint)Find(hist, ref remaining);
        var hist2 = new long[1024];
        for (long e = 0; e < numel; e++)
        {
            var key = Key(x[e] - b[e]);
            if (key >> 20 == b1)
            {
                hist2[(key >> 10) & 0x3FF]++;
            }
        }
        var prefix = (b1 << 10) | (uint)Find(hist2, ref remaining);
        var hist3 = new long[1024];
        for (long e = 0; e < numel; e++)
        {
            var key = Key(x[e] - b[e]);
            if (key >> 10 == prefix)
            {
                hist3[key & 0x3FF]++;
            }
        }
        return BitConverter.UInt32BitsToSingle((prefix << 10) | (uint)Find(hist3, ref remaining));
    }

    private static uint Key(float value) => BitConverter.SingleToUInt32Bits(value) & 0x7FFF_FFFF;

    private static int Find(long[] hist, ref long remaining)
    {
        for (var i = 0; i < hist.Length; i++)
        {
            if (remaining <= hist[i])
            {
                return i;
            }
            remaining -= hist[i];
        }
        throw new InvalidOperationException("radix select ran past the last bucket (an input changed while being read)");
    }
}
