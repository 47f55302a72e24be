using System.Collections.Concurrent;
using System.Diagnostics;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Bench;

/// <summary>The reference rates a merge is compared with.</summary>
internal static class Baselines
{
    private const int FloorPiece = 1 << 20;
    private const int FloorSlots = 4;
    private static byte[][]? _floorBuffers;

    /// <summary>
    /// The I/O floor: read every input tensor byte (positioned reads) and write as many output bytes through the same
    /// writer the engine uses (sharded safetensors, SHA-256 on), no math. Pipelined like the engine: a reader thread
    /// fills a ring of four 1 MiB buffers (each piece read from every input into the same buffer) while this thread
    /// writes and hashes the previous pieces, so reading and writing overlap as they do in a merge. Returns seconds.
    /// </summary>
    public static (double Seconds, long Bytes) IoFloor(IReadOnlyList<ModelFolder> inputs, string outFolder, long shardBytes)
    {
        Directory.CreateDirectory(outFolder);
        var reference = inputs[0];
        var plan = reference.Tensors.Select(t => new TensorPlanEntry(t.Name, t.DType, t.Shape)).ToList();
        if (_floorBuffers is null)
        {
            // One ring for every floor run of the process, first touched outside the timing.
            _floorBuffers = [.. Enumerable.Range(0, FloorSlots).Select(_ => GC.AllocateUninitializedArray<byte>(FloorPiece, pinned: true))];
            foreach (var b in _floorBuffers)
            {
                b.AsSpan().Clear();
            }
        }
        var buffers = _floorBuffers;
        using var free = new BlockingCollection<int>();
        for (var i = 0; i < FloorSlots; i++)
        {
            free.Add(i);
        }
        using var ready = new BlockingCollection<(string Name, long Offset, int Length, int Slot)>(FloorSlots);
        long read = 0;
        long written = 0;
        var clock = Stopwatch.StartNew();
        var reader = Task.Run(() =>
        {
            try
            {
                foreach (var t in reference.Tensors)
                {
                    for (long offset = 0; offset < t.ByteLength; offset += FloorPiece)
                    {
                        var length = (int)Math.Min(FloorPiece, t.ByteLength - offset);
                        var slot = free.Take();
                        var span = buffers[slot].AsSpan(0, length);
                        foreach (var model in inputs)
                        {
                            ModelFolder.ReadBytes(model.GetTensor(t.Name), offset, span);
                            read += length;
                        }
                        ready.Add((t.Name, offset, length, slot));
                    }
                }
            }
            finally
            {
                ready.CompleteAdding();
            }
        });
        using (var writer = new ShardedSafeTensorsWriter(outFolder, plan, shardBytes))
        {
            foreach (var (name, offset, length, slot) in ready.GetConsumingEnumerable())
            {
                writer.WriteChunk(name, offset, buffers[slot].AsSpan(0, length));
                written += length;
                free.Add(slot);
            }
            reader.GetAwaiter().GetResult();
            writer.Complete();
        }
        return (clock.Elapsed.TotalSeconds, read + written);
    }

    /// <summary>Memory copy rate (bytes copied per second) between two 256 MiB buffers already touched.</summary>
    public static double MemoryCopyRate()
    {
        const int size = 256 << 20;
        var a = GC.AllocateUninitializedArray<byte>(size, pinned: true);
        var b = GC.AllocateUninitializedArray<byte>(size, pinned: true);
        a.AsSpan().Fill(1);
        b.AsSpan().Clear();
        var clock = Stopwatch.StartNew();
        var reps = 0;
        while (clock.Elapsed.TotalSeconds < 1.0)
        {
            a.AsSpan().CopyTo(b);
            reps++;
        }
        return (double)reps * size / clock.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// Positioned reads into a reused buffer vs copying out of a fresh memory map (page faults included), over the
    /// same file already in the page cache. Returns bytes per second for each.
    /// </summary>
    public static (double Pread, double Mmap) ReadMethods(string file)
    {
        var length = new FileInfo(file).Length;
        var buffer = GC.AllocateUninitializedArray<byte>(64 << 20, pinned: true);
        buffer.AsSpan().Clear();
        using (var warm = File.OpenHandle(file))
        {
            for (long at = 0; at < length; at += buffer.Length)
            {
                RandomAccess.Read(warm, buffer, at);
            }
        }
        var clock = Stopwatch.StartNew();
        using (var handle = File.OpenHandle(file))
        {
            for (long at = 0; at < length; at += buffer.Length)
            {
                RandomAccess.Read(handle, buffer, at);
            }
        }
        var pread = length / clock.Elapsed.TotalSeconds;
        clock.Restart();
        using (var map = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(file, FileMode.Open, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read))
        using (var stream = map.CreateViewStream(0, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read))
        {
            while (stream.Read(buffer) > 0)
            {
            }
        }
        var mmap = length / clock.Elapsed.TotalSeconds;
        return (pread, mmap);
    }

    /// <summary>
    /// A straightforward per-tensor libtorch loop, as a Python script would write it: each tensor read into a fresh
    /// tensor, converted with allocating ops, merged with allocating ops, converted back and written. Returns seconds.
    /// </summary>
    public static (double Seconds, long Bytes) NaiveLoop(string method, ModelFolder baseModel, IReadOnlyList<ModelFolder> experts, double[] weights, double density, long seed, string outFolder, long shardBytes)
    {
        Directory.CreateDirectory(outFolder);
        var plan = baseModel.Tensors.Select(t => new TensorPlanEntry(t.Name, t.DType, t.Shape)).ToList();
        long bytes = 0;
        var clock = Stopwatch.StartNew();
        using var noGrad = torch.no_grad();
        using (var writer = new ShardedSafeTensorsWriter(outFolder, plan, shardBytes))
        {
            foreach (var t in baseModel.Tensors)
            {
                using var scope = torch.NewDisposeScope();
                var b = baseModel.ReadTensor(t.Name).to_type(ScalarType.Float32);
                var deltas = experts.Select(e => e.ReadTensor(t.Name).to_type(ScalarType.Float32) - b).ToList();
                bytes += t.ByteLength * (experts.Count + 1);
                Tensor merged;
                switch (method)
                {
                    case "task_arithmetic":
                        merged = b + deltas.Select((d, i) => d * weights[i]).Aggregate((x, y) => x + y);
                        break;
                    case "ties":
                    {
                        var trimmed = deltas.Select(d =>
                        {
                            var k = (long)Math.Ceiling(d.NumberOfElements * (1 - density));
                            var flat = d.abs().flatten();
                            var threshold = k <= 0 ? torch.tensor(-1f) : flat.kthvalue(k, 0, false).values;
                            return d * (d.abs() > threshold);
                        }).ToList();
                        merged = b + ElectSum(trimmed, weights, normalize: true);
                        break;
                    }
                    case "dare_ties":
                    {
                        using var gen = new torch.Generator((ulong)seed);
                        var dropped = deltas.Select(d => d * (torch.rand(d.shape, generator: gen) < density) / density).ToList();
                        merged = b + ElectSum(dropped, weights, normalize: false);
                        break;
                    }
                    default:
                        throw new ArgumentException("unknown method " + method, nameof(method));
                }
                var output = merged.to_type(t.DType.RequireScalarType()).contiguous();
                TensorBytes.ForEachSpan(output, (span, at) => writer.WriteChunk(t.Name, at, span));
                bytes += t.ByteLength;
            }
            writer.Complete();
        }
        return (clock.Elapsed.TotalSeconds, bytes);
    }

    private static Tensor ElectSum(List<Tensor> deltas, double[] w, bool normalize)
    {
        var weighted = deltas.Select((d, i) => d * w[i]).ToList();
        var sign = weighted.Aggregate((x, y) => x + y).sign();
        var masks = weighted.Select(x => x.sign() == sign).ToList();
        var sum = weighted.Select((x, i) => x * masks[i]).Aggregate((x, y) => x + y);
        if (!normalize)
        {
            return sum;
        }
        var divisor = masks.Select((m, i) => m * w[i]).Aggregate((x, y) => x + y);
        return sum / torch.where(divisor == 0, torch.ones_like(divisor), divisor);
    }
}
