using SensMerging.Core.SafeTensors;
using TorchSharp;

namespace SensMerging.Core.Tests;

public sealed class SafeTensorsRoundTripTests
{
    [Fact]
    public void Writes_and_reads_back_every_kind_of_tensor()
    {
        using var dir = new SafeTensorsTempDir();
        var f32 = SafeTensorsTestData.Bytes(1f, -2.5f, 3.25f, 0f, 1e-3f, 7f);
        var f16 = SafeTensorsTestData.Bytes((Half)1.5, (Half)(-2), (Half)0.25);
        var bf16 = SafeTensorsTestData.Bytes<ushort>(0x3F80, 0xC020, 0x4000, 0x0000); // 1, -2.5, 2, 0
        var i64 = SafeTensorsTestData.Bytes(long.MinValue, 0L, long.MaxValue);
        var boolean = new byte[] { 1, 0, 1, 1 };
        var scalar = SafeTensorsTestData.Bytes(42f);
        var path = SafeTensorsTestData.Write(dir.File("a.safetensors"),
            ("f32", SafeTensorsDType.F32, [2, 3], f32),
            ("f16", SafeTensorsDType.F16, [3], f16),
            ("empty", SafeTensorsDType.F32, [0, 4], []),
            ("bf16", SafeTensorsDType.BF16, [2, 2], bf16),
            ("i64", SafeTensorsDType.I64, [3], i64),
            ("bool", SafeTensorsDType.Bool, [4], boolean),
            ("scalar", SafeTensorsDType.F32, [], scalar),
            ("u16", SafeTensorsDType.U16, [2], SafeTensorsTestData.Bytes<ushort>(1, 65535)));

        var length = new FileInfo(path).Length;
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(0, file.DataStart % 8);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(8, file.Tensors.Count);
        Assert.Equal(length, file.FileLength);
        foreach (var (name, expected) in new[] { ("f32", f32), ("f16", f16), ("bf16", bf16), ("i64", i64), ("bool", boolean), ("scalar", scalar) })
        {
            var info = file.GetTensor(name);
            var got = new byte[info.ByteLength];
            file.ReadBytes(info, got);
            Assert.Equal(expected, got);
        }
        Assert.Equal(0, file.GetTensor("empty").ByteLength);
        Assert.Empty(file.GetTensor("scalar").Shape);

        using (var t = file.ReadTensor("f32"))
        {
            Assert.Equal([2L, 3L], t.shape);
            Assert.Equal([1f, -2.5f, 3.25f, 0f, 1e-3f, 7f], t.data<float>().ToArray());
        }
        using (var t = file.ReadTensor("bf16"))
        using (var f = t.to_type(torch.ScalarType.Float32))
        {
            Assert.Equal(torch.ScalarType.BFloat16, t.dtype);
            Assert.Equal([1f, -2.5f, 2f, 0f], f.data<float>().ToArray());
        }
        using (var t = file.ReadTensor("f16"))
        using (var f = t.to_type(torch.ScalarType.Float32))
        {
            Assert.Equal([1.5f, -2f, 0.25f], f.data<float>().ToArray());
        }
        using (var t = file.ReadTensor("i64"))
        {
            Assert.Equal([long.MinValue, 0L, long.MaxValue], t.data<long>().ToArray());
        }
        using (var t = file.ReadTensor("bool"))
        {
            Assert.Equal([true, false, true, true], t.data<bool>().ToArray());
        }
        using (var t = file.ReadTensor("scalar"))
        {
            Assert.Equal(0, t.Dimensions);
            Assert.Equal(42f, t.item<float>());
        }
        using (var t = file.ReadTensor("empty"))
        {
            Assert.Equal([0L, 4L], t.shape);
        }
        var u16 = Assert.Throws<NotSupportedException>(() => file.ReadTensor("u16"));
        Assert.Contains("U16", u16.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Reads_a_range_into_a_view_of_a_larger_tensor()
    {
        using var dir = new SafeTensorsTempDir();
        var values = Enumerable.Range(0, 10).Select(i => (float)i).ToArray();
        var path = SafeTensorsTestData.Write(dir.File("r.safetensors"), ("x", SafeTensorsDType.F32, [10], SafeTensorsTestData.Bytes(values)));
        using var file = SafeTensorsFile.Open(path);
        using var buffer = torch.full(8, -1f);
        using var view = buffer.narrow(0, 2, 3);
        file.ReadInto(file.GetTensor("x"), 4 * 4, view);
        Assert.Equal([-1f, -1f, 4f, 5f, 6f, -1f, -1f, -1f], buffer.data<float>().ToArray());
    }

    [Fact]
    public void Header_is_padded_so_data_is_8_byte_aligned_and_metadata_is_kept()
    {
        for (var nameLength = 1; nameLength < 10; nameLength++)
        {
            var plan = new[] { new TensorPlanEntry(new string('a', nameLength), SafeTensorsDType.U8, [3]) };
            var header = SafeTensorsWriter.BuildHeader(plan, new Dictionary<string, string> { ["k"] = "v" });
            Assert.Equal(0, header.Length % 8);
            Assert.Equal((ulong)(header.Length - 8), BitConverter.ToUInt64(header, 0));
            Assert.Equal((byte)' ', header[^1] == (byte)'}' ? (byte)' ' : header[^1]);
        }
    }

    [Fact]
    public void Writer_rejects_out_of_order_and_incomplete_tensors()
    {
        using var dir = new SafeTensorsTempDir();
        var plan = new[] { new TensorPlanEntry("a", SafeTensorsDType.F32, [2]), new TensorPlanEntry("b", SafeTensorsDType.F32, [1]) };
        using var writer = new SafeTensorsWriter(dir.File("w.safetensors"), plan);
        Assert.Throws<InvalidOperationException>(() => writer.WriteTensor("b", new byte[4]));
        writer.WriteChunk("a", 0, new byte[4]);
        Assert.Throws<InvalidOperationException>(() => writer.WriteChunk("a", 0, new byte[4]));
        Assert.Throws<InvalidOperationException>(() => writer.Complete());
    }

    [Fact]
    public void Pieces_written_at_their_offsets_in_any_order_give_the_same_file_and_hash()
    {
        using var dir = new SafeTensorsTempDir();
        var plan = new[]
        {
            new TensorPlanEntry("a", SafeTensorsDType.F32, [300]),
            new TensorPlanEntry("empty", SafeTensorsDType.F32, [0]),
            new TensorPlanEntry("b", SafeTensorsDType.U8, [777]),
            new TensorPlanEntry("c", SafeTensorsDType.BF16, [5, 40]),
        };
        var data = plan.ToDictionary(p => p.Name, p => Enumerable.Range(0, (int)p.ByteLength).Select(i => (byte)((i * 31) + p.Name[0])).ToArray());
        WrittenFile sequential;
        using (var writer = new SafeTensorsWriter(dir.File("seq.safetensors"), plan))
        {
            foreach (var p in plan)
            {
                writer.WriteTensor(p.Name, data[p.Name]);
            }
            sequential = writer.Complete();
        }
        // Pieces of 100 bytes (and the tails), shuffled: some land at the hash frontier, most ahead of it.
        var pieces = plan.SelectMany(p => Enumerable.Range(0, (int)((p.ByteLength + 99) / 100)).Select(i => (p.Name, Offset: i * 100L, Length: (int)Math.Min(100, p.ByteLength - (i * 100L))))).ToList();
        var shuffled = pieces.OrderBy(_ => Random.Shared.Next()).ToList();
        shuffled.Reverse(0, 2);
        WrittenFile positioned;
        using (var writer = new SafeTensorsWriter(dir.File("pos.safetensors"), plan))
        {
            foreach (var (name, offset, length) in shuffled)
            {
                Assert.False(writer.IsComplete);
                writer.WriteAt(name, offset, data[name].AsSpan((int)offset, length));
            }
            Assert.True(writer.IsComplete);
            positioned = writer.Complete();
        }
        Assert.Equal(File.ReadAllBytes(sequential.Path), File.ReadAllBytes(positioned.Path));
        Assert.Equal(sequential.Sha256, positioned.Sha256);
        Assert.Equal(sequential.Size, positioned.Size);
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(positioned.Path))), positioned.Sha256);
    }

    [Fact]
    public void Positioned_writes_reject_overlaps_overruns_mixing_and_gaps()
    {
        using var dir = new SafeTensorsTempDir();
        var plan = new[] { new TensorPlanEntry("a", SafeTensorsDType.F32, [4]), new TensorPlanEntry("b", SafeTensorsDType.F32, [4]) };
        using var writer = new SafeTensorsWriter(dir.File("w.safetensors"), plan);
        writer.WriteAt("b", 4, new byte[8]);
        Assert.Throws<InvalidOperationException>(() => writer.WriteAt("b", 8, new byte[4]));   // overlaps [4, 12)
        Assert.Throws<InvalidOperationException>(() => writer.WriteAt("b", 0, new byte[8]));   // overlaps at 4
        Assert.Throws<InvalidOperationException>(() => writer.WriteAt("a", 12, new byte[8]));  // past a's 16 bytes
        Assert.Throws<InvalidOperationException>(() => writer.WriteAt("c", 0, new byte[4]));   // not planned
        Assert.Throws<InvalidOperationException>(() => writer.WriteChunk("a", 0, new byte[4])); // no mixing
        writer.WriteAt("a", 0, new byte[16]);
        writer.WriteAt("b", 12, new byte[4]);
        var ex = Assert.Throws<InvalidOperationException>(() => writer.Complete());
        Assert.Contains("'b'", ex.Message, StringComparison.Ordinal);
        writer.WriteAt("b", 0, new byte[4]);
        Assert.True(writer.IsComplete);
        writer.Complete();
    }

    [Fact]
    public void Sharded_positioned_writes_in_reverse_order_match_the_streamed_shards()
    {
        using var dir = new SafeTensorsTempDir();
        var plan = Enumerable.Range(0, 7).Select(i => new TensorPlanEntry($"t{i}", SafeTensorsDType.F32, [10 + i])).ToList();
        var data = plan.ToDictionary(p => p.Name, p => Enumerable.Range(0, (int)p.ByteLength).Select(i => (byte)(i ^ p.Name[1])).ToArray());
        var seqDir = dir.File("seq");
        var posDir = dir.File("pos");
        Directory.CreateDirectory(seqDir);
        Directory.CreateDirectory(posDir);
        IReadOnlyList<WrittenFile> seq, pos;
        using (var writer = new ShardedSafeTensorsWriter(seqDir, plan, 120))
        {
            plan.ForEach(p => writer.WriteTensor(p.Name, data[p.Name]));
            seq = writer.Complete();
        }
        using (var writer = new ShardedSafeTensorsWriter(posDir, plan, 120))
        {
            Assert.True(writer.Shards.Count > 2);
            foreach (var p in Enumerable.Reverse(plan))
            {
                writer.WriteAt(p.Name, 8, data[p.Name].AsSpan(8));
                writer.WriteAt(p.Name, 0, data[p.Name].AsSpan(0, 8));
            }
            Assert.Throws<InvalidOperationException>(() => writer.WriteChunk("t0", 0, data["t0"]));
            pos = writer.Complete();
        }
        Assert.Equal(seq.Select(f => (Path.GetFileName(f.Path), f.Size, f.Sha256)), pos.Select(f => (Path.GetFileName(f.Path), f.Size, f.Sha256)));
        foreach (var f in pos)
        {
            Assert.Equal(File.ReadAllBytes(f.Path), File.ReadAllBytes(Path.Combine(seqDir, Path.GetFileName(f.Path))));
        }
    }

    [Theory]
    [InlineData("5B", 5_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("2GB", 2_000_000_000L)]
    [InlineData("1GiB", 1L << 30)]
    [InlineData("1.5mib", 1_572_864L)]
    [InlineData("4096", 4096L)]
    [InlineData("10K", 10_000L)]
    public void Parses_shard_sizes(string text, long expected) => Assert.Equal(expected, ByteSize.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("MB")]
    [InlineData("5 parsecs")]
    [InlineData("0")]
    public void Rejects_bad_shard_sizes(string text) => Assert.Throws<FormatException>(() => ByteSize.Parse(text));

    [Fact]
    public void Dtype_table_parses_user_spellings()
    {
        Assert.Same(SafeTensorsDType.BF16, SafeTensorsDType.Parse("bfloat16"));
        Assert.Same(SafeTensorsDType.BF16, SafeTensorsDType.Parse("torch.bfloat16"));
        Assert.Same(SafeTensorsDType.F16, SafeTensorsDType.Parse("fp16"));
        Assert.Same(SafeTensorsDType.F32, SafeTensorsDType.Parse("F32"));
        Assert.Equal(16, SafeTensorsDType.All.Count);
        Assert.Throws<FormatException>(() => SafeTensorsDType.Parse("float7"));
    }
}
