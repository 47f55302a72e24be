using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// The Gram matrix (every pairwise sum of products, squared norms on the diagonal) of K vectors that arrive in blocks,
/// in double precision: the statistics pass of the geometric strategies (slerp's angle, model_stock's cosines).
/// Optionally the vectors are differences from an origin (task vectors: <c>x_i - base</c>, subtracted in float32 as the
/// merge does). Each element's products go to accumulator lane <c>(position in the whole tensor) mod 8</c> in ascending
/// position order, and the lanes are added in a fixed order at the end, so the sums are the same however the tensor is
/// cut into blocks (and whether an element takes the vector or the scalar path).
/// </summary>
public sealed unsafe class BlockGram
{
    private const int Lanes = 8;
    private readonly int _vectors;
    private readonly double[] _lanes;
    private readonly float*[] _pointers;

    public BlockGram(int vectors)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vectors, 1);
        _vectors = vectors;
        _lanes = new double[Pairs(vectors) * Lanes];
        _pointers = new float*[vectors];
    }

    /// <summary>Number of vectors.</summary>
    public int Vectors => _vectors;

    /// <summary>
    /// Adds one block: <paramref name="vectors"/>[i] holds elements <c>[start, start + n)</c> of vector i (any device,
    /// dtype or layout: other than contiguous CPU float32 they are copied first), <paramref name="origin"/> (or null) is
    /// subtracted from each.
    /// </summary>
    public void Add(IReadOnlyList<Tensor> vectors, Tensor? origin, long start)
    {
        ArgumentNullException.ThrowIfNull(vectors);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        if (vectors.Count != _vectors)
        {
            throw new ArgumentException($"expected {_vectors} vectors, got {vectors.Count}", nameof(vectors));
        }
        using var scope = torch.NewDisposeScope();
        var n = vectors[0].numel();
        for (var i = 0; i < _vectors; i++)
        {
            if (vectors[i].numel() != n)
            {
                throw new ArgumentException($"vector {i} has {vectors[i].numel()} elements in this block, vector 0 has {n}", nameof(vectors));
            }
            _pointers[i] = n == 0 ? null : NativeSpans.Float32(Direct(vectors[i]));
        }
        if (origin is not null && origin.numel() != n)
        {
            throw new ArgumentException($"the origin has {origin.numel()} elements in this block, the vectors {n}", nameof(origin));
        }
        if (n == 0)
        {
            return;
        }
        Accumulate(_pointers, origin is null ? null : NativeSpans.Float32(Direct(origin)), n, start);
    }

    /// <summary>The sum of products of vectors <paramref name="i"/> and <paramref name="j"/> over every element added so far.</summary>
    public double Sum(int i, int j)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(i);
        ArgumentOutOfRangeException.ThrowIfNegative(j);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(i, _vectors);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(j, _vectors);
        var l = _lanes.AsSpan(Pair(Math.Min(i, j), Math.Max(i, j)) * Lanes, Lanes);
        return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }

    /// <summary>The Euclidean norm of vector <paramref name="i"/>.</summary>
    public double Norm(int i) => Math.Sqrt(Sum(i, i));

    private static int Pairs(int k) => k * (k + 1) / 2;

    // Row-major upper triangle: (0,0) (0,1) ... (0,k-1) (1,1) ...
    private int Pair(int i, int j) => (i * ((2 * _vectors) - i + 1) / 2) + (j - i);

    private static Tensor Direct(Tensor t) =>
        StorageFormats.Of(t) == StorageFormat.Float32 ? t : t.to(DeviceType.CPU).to(ScalarType.Float32).contiguous();

    private void Accumulate(float*[] x, float* origin, long n, long start)
    {
        long e = 0;
        // Scalar head until the position in the whole tensor is a multiple of the lane count.
        for (; e < n && (start + e) % Lanes != 0; e++)
        {
            AddScalar(x, origin, e, (int)((start + e) % Lanes));
        }
        if (Vector256.IsHardwareAccelerated && n - e >= Lanes)
        {
            var pairs = Pairs(_vectors);
            var low = new Vector256<double>[pairs];
            var high = new Vector256<double>[pairs];
            for (var p = 0; p < pairs; p++)
            {
                low[p] = Vector256.Create(_lanes.AsSpan(p * Lanes, 4));
                high[p] = Vector256.Create(_lanes.AsSpan((p * Lanes) + 4, 4));
            }
            var lo = new Vector256<double>[_vectors];
            var hi = new Vector256<double>[_vectors];
            for (; e + Lanes <= n; e += Lanes)
            {
                var b = origin is null ? Vector256<float>.Zero : Vector256.Load(origin + e);
                for (var i = 0; i < _vectors; i++)
                {
                    var v = Vector256.Load(x[i] + e);
                    if (origin is not null)
                    {
                        v -= b;
                    }
                    (lo[i], hi[i]) = Vector256.Widen(v);
                }
                var p = 0;
                for (var i = 0; i < _vectors; i++)
                {
                    for (var j = i; j < _vectors; j++, p++)
                    {
                        low[p] += lo[i] * lo[j];
                        high[p] += hi[i] * hi[j];
                    }
                }
            }
            for (var p = 0; p < pairs; p++)
            {
                low[p].CopyTo(_lanes, p * Lanes);
                high[p].CopyTo(_lanes, (p * Lanes) + 4);
            }
        }
        for (; e < n; e++)
        {
            AddScalar(x, origin, e, (int)((start + e) % Lanes));
        }
    }

    private void AddScalar(float*[] x, float* origin, long e, int lane)
    {
        Span<double> v = stackalloc double[_vectors];
        for (var i = 0; i < _vectors; i++)
        {
            v[i] = origin is null ? x[i][e] : x[i][e] - origin[e];
        }
        var p = 0;
        for (var i = 0; i < _vectors; i++)
        {
            for (var j = i; j < _vectors; j++, p++)
            {
                _lanes[(p * Lanes) + lane] += v[i] * v[j];
            }
        }
    }
}
