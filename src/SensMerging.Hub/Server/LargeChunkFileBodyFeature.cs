using Microsoft.AspNetCore.Http.Features;
using Microsoft.Win32.SafeHandles;

namespace SensMerging.Hub.Server;

/// <summary>
/// Wraps a response body feature so that <see cref="SendFileAsync"/> (what <c>Results.File</c> calls after it has
/// handled ranges, preconditions and headers) reads the file in large chunks straight into the response pipe's
/// memory, one read and one flush per chunk. Kestrel's own fallback copies through 16 KiB buffers with an async file
/// read and a flush for each, which costs several times the CPU per byte. Everything else goes to the wrapped feature.
/// </summary>
internal sealed class LargeChunkFileBodyFeature(IHttpResponseBodyFeature inner) : IHttpResponseBodyFeature
{
    /// <summary>Bytes read from the file per flush.</summary>
    internal const int ChunkSize = 1024 * 1024;

    public Stream Stream => inner.Stream;

    public System.IO.Pipelines.PipeWriter Writer => inner.Writer;

    public void DisableBuffering() => inner.DisableBuffering();

    public Task StartAsync(CancellationToken cancellationToken = default) => inner.StartAsync(cancellationToken);

    public Task CompleteAsync() => inner.CompleteAsync();

    public async Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default)
    {
        if (count == 0 || (count is null && new FileInfo(path).Length == 0))
        {
            // Nothing to send, and the file is not opened: a FIFO (which also reports size 0) would wait for a writer.
            await inner.StartAsync(cancellationToken);
            return;
        }

        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        long length = RandomAccess.GetLength(handle);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset, length);
        long end = count is { } c ? offset + c : length;
        if (end > length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"The range ends at byte {end} but '{path}' has {length} bytes.");
        }

        await inner.StartAsync(cancellationToken);
        var writer = inner.Writer;
        for (long position = offset; position < end;)
        {
            int want = (int)Math.Min(ChunkSize, end - position);
            var memory = writer.GetMemory(want);
            want = Math.Min(want, memory.Length);

            // A synchronous positioned read: the served files normally sit in the page cache, and an async read on
            // Unix would only hand the same blocking call to another thread pool thread.
            int read = RandomAccess.Read(handle, memory.Span[..want], position);
            if (read == 0)
            {
                throw new IOException($"'{path}' ended at byte {position} while {end} bytes were being sent; it changed on disk.");
            }

            writer.Advance(read);
            position += read;
            var flush = await writer.FlushAsync(cancellationToken);
            if (flush.IsCompleted || flush.IsCanceled)
            {
                return;
            }
        }
    }
}
