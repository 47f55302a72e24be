using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Scorers;

/// <summary>
/// The reference logits z_j(x) of every task's own expert, kept between the two phases of <c>logit_alignment</c>.
/// Entries are float32 <c>[tokens, vocabulary]</c> on the CPU. They stay in memory while the total is within the
/// budget; past it, further entries go to a temporary file (positioned writes, deleted on dispose) and are read back
/// into one reused buffer, so memory stays bounded whatever the number of samples.
/// </summary>
internal sealed class ReferenceLogitStore : IDisposable
{
    private readonly long _memoryBudgetBytes;
    private readonly string _directory;
    private readonly List<Entry> _entries = [];
    private SafeFileHandle? _file;
    private string? _filePath;
    private long _fileLength;
    private Tensor? _readBuffer;
    private bool _disposed;

    public ReferenceLogitStore(long memoryBudgetBytes, string? directory = null)
    {
        _memoryBudgetBytes = Math.Max(0, memoryBudgetBytes);
        _directory = directory ?? Path.GetTempPath();
    }

    public long BytesInMemory { get; private set; }

    public long BytesOnDisk => _fileLength;

    public int Count => _entries.Count;

    /// <summary>Stores a copy of <paramref name="logits"/> (<c>[tokens, vocabulary]</c>) and returns its index.</summary>
    public int Add(Tensor logits, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(logits);
        if (logits.dim() != 2)
        {
            throw new ArgumentException($"reference logits must be [tokens, vocabulary], got [{string.Join(", ", logits.shape)}]", nameof(logits));
        }
        var rows = logits.shape[0];
        var columns = logits.shape[1];
        var bytes = rows * columns * sizeof(float);
        using var scope = NewDisposeScope();
        var copy = logits.detach().to(ScalarType.Float32).cpu().contiguous();
        if (BytesInMemory + bytes <= _memoryBudgetBytes)
        {
            // clone: the copy above may share storage with the caller's tensor when it already was float32 on the CPU.
            var kept = copy.clone().DetachFromDisposeScope();
            _entries.Add(new Entry(rows, columns, kept, -1));
            BytesInMemory += bytes;
            return _entries.Count - 1;
        }
        if (bytes > int.MaxValue)
        {
            throw new InvalidOperationException($"reference logits of one sample take {bytes} bytes; at most {int.MaxValue} per sample can be spilled (lower max_length).");
        }
        cancellationToken.ThrowIfCancellationRequested();
        var file = OpenFile();
        var offset = _fileLength;
        RandomAccess.Write(file, copy.bytes, offset);
        _fileLength += bytes;
        _entries.Add(new Entry(rows, columns, null, offset));
        return _entries.Count - 1;
    }

    /// <summary>
    /// The logits stored under <paramref name="index"/>. For an entry in memory, the stored tensor; for a spilled one, a
    /// view of a reused buffer that the next call overwrites. Either way the caller must not dispose or keep it.
    /// </summary>
    public Tensor Get(int index, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var entry = _entries[index];
        if (entry.InMemory is not null)
        {
            return entry.InMemory;
        }
        cancellationToken.ThrowIfCancellationRequested();
        var numel = entry.Rows * entry.Columns;
        if (_readBuffer is null || _readBuffer.numel() < numel)
        {
            _readBuffer?.Dispose();
            using var scope = NewDisposeScope();
            _readBuffer = empty(numel, ScalarType.Float32).DetachFromDisposeScope();
        }
        var view = _readBuffer.narrow(0, 0, numel).view(entry.Rows, entry.Columns);
        var target = view.bytes;
        var read = 0;
        while (read < target.Length)
        {
            var n = RandomAccess.Read(_file!, target[read..], entry.Offset + read);
            if (n <= 0)
            {
                throw new IOException($"the reference-logit spill file '{_filePath}' ended early (entry {index}).");
            }
            read += n;
        }
        return view;
    }

    private SafeFileHandle OpenFile()
    {
        if (_file is null)
        {
            Directory.CreateDirectory(_directory);
            _filePath = Path.Combine(_directory, $"sensmerge-logits-{Guid.NewGuid():N}.bin");
            _file = File.OpenHandle(_filePath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        }
        return _file;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var entry in _entries)
        {
            entry.InMemory?.Dispose();
        }
        _entries.Clear();
        _readBuffer?.Dispose();
        _file?.Dispose();
    }

    private sealed record Entry(long Rows, long Columns, Tensor? InMemory, long Offset);
}
