using System.Buffers.Binary;
using System.Collections.Frozen;
using System.Globalization;
using System.Text;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.PyTorch;

/// <summary>A storage a checkpoint's pickle refers to by persistent id: its element type and its zip entry key.</summary>
internal sealed record PickledStorage(SafeTensorsDType DType, string Key, string Location);

/// <summary>A tensor as <c>torch._utils._rebuild_tensor_v2</c> would rebuild it: a view of a storage.</summary>
internal sealed record PickledTensor(PickledStorage Storage, long StorageOffset, long[] Shape, long[] Stride);

/// <summary>A global the pickle named (one of <see cref="RestrictedUnpickler.AllowedGlobals"/>): a name, never a resolved object.</summary>
internal sealed record PickledGlobal(string Name);

/// <summary>A dict or <c>collections.OrderedDict</c>, in insertion order.</summary>
internal sealed class PickledDict
{
    public List<KeyValuePair<object?, object?>> Items { get; } = [];
}

/// <summary>
/// A pickle reader for PyTorch checkpoints' <c>data.pkl</c>. It is a data decoder, not Python's unpickler: it knows the
/// opcodes <c>torch.save</c> emits (protocol 2, and the few protocol 4 adds) and turns them into plain values, dicts,
/// lists, tuples, storages and tensor views. A global is only a name here; the names a state dict needs
/// (<see cref="AllowedGlobals"/>) are understood, and any other global is refused at the opcode that names it, before
/// any further opcode is read, with an error naming it. Nothing is ever called, imported or executed.
/// </summary>
internal sealed class RestrictedUnpickler
{
    private const string RebuildTensor = "torch._utils._rebuild_tensor_v2";
    private const string RebuildParameter = "torch._utils._rebuild_parameter";
    private const string OrderedDict = "collections.OrderedDict";

    private static readonly FrozenDictionary<string, SafeTensorsDType> StorageTypes = new Dictionary<string, SafeTensorsDType>
    {
        ["torch.DoubleStorage"] = SafeTensorsDType.F64,
        ["torch.FloatStorage"] = SafeTensorsDType.F32,
        ["torch.HalfStorage"] = SafeTensorsDType.F16,
        ["torch.BFloat16Storage"] = SafeTensorsDType.BF16,
        ["torch.LongStorage"] = SafeTensorsDType.I64,
        ["torch.IntStorage"] = SafeTensorsDType.I32,
        ["torch.ShortStorage"] = SafeTensorsDType.I16,
        ["torch.CharStorage"] = SafeTensorsDType.I8,
        ["torch.ByteStorage"] = SafeTensorsDType.U8,
        ["torch.BoolStorage"] = SafeTensorsDType.Bool,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Every global a checkpoint may name.</summary>
    public static IReadOnlyList<string> AllowedGlobals { get; } = [RebuildTensor, RebuildParameter, OrderedDict, .. StorageTypes.Keys.Order(StringComparer.Ordinal)];

    private static readonly FrozenSet<string> Allowed = AllowedGlobals.ToFrozenSet(StringComparer.Ordinal);

    private static readonly object Mark = new();

    private readonly byte[] _data;
    private readonly string _where;
    private readonly List<object?> _stack = [];
    private readonly Dictionary<long, object?> _memo = [];
    private readonly Dictionary<string, PickledStorage> _storages = new(StringComparer.Ordinal);
    private int _at;

    private RestrictedUnpickler(byte[] data, string where)
    {
        _data = data;
        _where = where;
    }

    /// <summary>Decodes a pickle; <paramref name="where"/> names it in errors (for example <c>/m/pytorch_model.bin: data.pkl</c>).</summary>
    /// <exception cref="PyTorchCheckpointException">A forbidden global, an unknown opcode or a malformed stream.</exception>
    public static object? Load(byte[] data, string where)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new RestrictedUnpickler(data, where).Run();
    }

    private object? Run()
    {
        while (true)
        {
            var position = _at;
            var op = ReadByte();
            switch (op)
            {
                case 0x80: // PROTO
                    var protocol = ReadByte();
                    if (protocol > 5)
                    {
                        throw Error(position, $"pickle protocol {protocol} is not supported");
                    }
                    break;
                case 0x95: // FRAME
                    Take(8);
                    break;
                case (byte)'.': // STOP
                    if (_stack.Count != 1)
                    {
                        throw Error(position, $"STOP with {_stack.Count} values on the stack (expected 1)");
                    }
                    return _stack[0];
                case (byte)'(':
                    _stack.Add(Mark);
                    break;
                case (byte)'}':
                    _stack.Add(new PickledDict());
                    break;
                case (byte)']':
                    _stack.Add(new List<object?>());
                    break;
                case (byte)')':
                    _stack.Add(Array.Empty<object?>());
                    break;
                case (byte)'N':
                    _stack.Add(null);
                    break;
                case 0x88:
                    _stack.Add(true);
                    break;
                case 0x89:
                    _stack.Add(false);
                    break;
                case (byte)'J': // BININT
                    _stack.Add((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4)));
                    break;
                case (byte)'K': // BININT1
                    _stack.Add((long)ReadByte());
                    break;
                case (byte)'M': // BININT2
                    _stack.Add((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2)));
                    break;
                case 0x8a: // LONG1
                    _stack.Add(ReadLong(ReadByte(), position));
                    break;
                case (byte)'G': // BINFLOAT
                    _stack.Add(BinaryPrimitives.ReadDoubleBigEndian(Take(8)));
                    break;
                case (byte)'X': // BINUNICODE
                    _stack.Add(ReadString(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)), position));
                    break;
                case 0x8c: // SHORT_BINUNICODE
                    _stack.Add(ReadString(ReadByte(), position));
                    break;
                case 0x8d: // BINUNICODE8
                    _stack.Add(ReadString(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)), position));
                    break;
                case (byte)'C': // SHORT_BINBYTES
                    _stack.Add(Take(ReadByte()).ToArray());
                    break;
                case (byte)'B': // BINBYTES
                    _stack.Add(Take(CheckedLength(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)), position)).ToArray());
                    break;
                case (byte)'c': // GLOBAL
                    var module = ReadLine(position);
                    var name = ReadLine(position);
                    _stack.Add(Global(module, name, position));
                    break;
                case 0x93: // STACK_GLOBAL
                    var stackName = Pop(position) as string ?? throw Error(position, "STACK_GLOBAL without a string name");
                    var stackModule = Pop(position) as string ?? throw Error(position, "STACK_GLOBAL without a string module");
                    _stack.Add(Global(stackModule, stackName, position));
                    break;
                case (byte)'q': // BINPUT
                    _memo[ReadByte()] = Peek(position);
                    break;
                case (byte)'r': // LONG_BINPUT
                    _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Peek(position);
                    break;
                case 0x94: // MEMOIZE
                    _memo[_memo.Count] = Peek(position);
                    break;
                case (byte)'h': // BINGET
                    _stack.Add(Get(ReadByte(), position));
                    break;
                case (byte)'j': // LONG_BINGET
                    _stack.Add(Get(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)), position));
                    break;
                case (byte)'t': // TUPLE
                    _stack.Add(PopToMark(position).ToArray());
                    break;
                case 0x85:
                    _stack.Add(new[] { Pop(position) });
                    break;
                case 0x86:
                    {
                        var b = Pop(position);
                        var a = Pop(position);
                        _stack.Add(new[] { a, b });
                        break;
                    }
                case 0x87:
                    {
                        var c = Pop(position);
                        var b = Pop(position);
                        var a = Pop(position);
                        _stack.Add(new[] { a, b, c });
                        break;
                    }
                case (byte)'a': // APPEND
                    {
                        var value = Pop(position);
                        AsList(Peek(position), position).Add(value);
                        break;
                    }
                case (byte)'e': // APPENDS
                    {
                        var values = PopToMark(position);
                        AsList(Peek(position), position).AddRange(values);
                        break;
                    }
                case (byte)'s': // SETITEM
                    {
                        var value = Pop(position);
                        var key = Pop(position);
                        AsDict(Peek(position), position).Items.Add(new(key, value));
                        break;
                    }
                case (byte)'u': // SETITEMS
                    {
                        var values = PopToMark(position);
                        if (values.Count % 2 != 0)
                        {
                            throw Error(position, "SETITEMS with an odd number of values");
                        }
                        var dict = AsDict(Peek(position), position);
                        for (var i = 0; i < values.Count; i += 2)
                        {
                            dict.Items.Add(new(values[i], values[i + 1]));
                        }
                        break;
                    }
                case (byte)'Q': // BINPERSID
                    _stack.Add(PersistentLoad(Pop(position), position));
                    break;
                case (byte)'R': // REDUCE
                    {
                        var args = Pop(position) as object?[] ?? throw Error(position, "REDUCE without an argument tuple");
                        var callable = Pop(position);
                        _stack.Add(Reduce(callable, args, position));
                        break;
                    }
                case (byte)'b': // BUILD
                    {
                        _ = Pop(position);
                        var target = Peek(position);
                        if (target is not PickledDict and not PickledTensor)
                        {
                            throw Error(position, $"BUILD on {Describe(target)} (only dicts and tensors carry state in a checkpoint)");
                        }
                        break;
                    }
                default:
                    throw Error(position, $"pickle opcode 0x{op:x2} ('{(op is >= 0x20 and < 0x7f ? ((char)op).ToString() : "?")}') is not one a PyTorch state dict uses; refused");
            }
        }
    }

    private PickledGlobal Global(string module, string name, int position)
    {
        var full = module + "." + name;
        if (!Allowed.Contains(full))
        {
            throw Error(position, $"the pickle names the global '{full}', which is not one of the tensor-rebuild globals a checkpoint may use ({string.Join(", ", AllowedGlobals)}); the file is refused and nothing in it was run");
        }
        return new PickledGlobal(full);
    }

    private object Reduce(object? callable, object?[] args, int position)
    {
        switch (callable)
        {
            case PickledGlobal { Name: OrderedDict }:
                if (args.Length != 0)
                {
                    throw Error(position, "collections.OrderedDict called with arguments");
                }
                return new PickledDict();
            case PickledGlobal { Name: RebuildParameter }:
                if (args.Length < 1 || args[0] is not PickledTensor parameter)
                {
                    throw Error(position, "torch._utils._rebuild_parameter without a tensor");
                }
                return parameter;
            case PickledGlobal { Name: RebuildTensor }:
                if (args.Length < 4 || args[0] is not PickledStorage storage || args[1] is not long offset
                    || args[2] is not object?[] size || args[3] is not object?[] stride || size.Length != stride.Length)
                {
                    throw Error(position, "torch._utils._rebuild_tensor_v2 needs (storage, offset, size, stride, ...)");
                }
                var shape = Longs(size, "size", position);
                var strides = Longs(stride, "stride", position);
                if (offset < 0 || shape.Any(d => d < 0) || strides.Any(s => s < 0))
                {
                    throw Error(position, $"tensor with a negative offset, size or stride (offset {offset}, size {TensorShape.Format(shape)}, stride {TensorShape.Format(strides)})");
                }
                return new PickledTensor(storage, offset, shape, strides);
            case PickledGlobal other:
                throw Error(position, $"'{other.Name}' is not something a checkpoint may call");
            default:
                throw Error(position, $"REDUCE on {Describe(callable)}");
        }
    }

    private PickledStorage PersistentLoad(object? pid, int position)
    {
        if (pid is not object?[] { Length: 5 } tuple || tuple[0] is not "storage" || tuple[1] is not PickledGlobal { Name: var type }
            || tuple[2] is not string key || tuple[3] is not string location)
        {
            throw Error(position, $"persistent id {Describe(pid)} is not ('storage', type, key, location, size)");
        }
        if (!StorageTypes.TryGetValue(type, out var dtype))
        {
            throw Error(position, $"'{type}' is not a storage type");
        }
        if (_storages.TryGetValue(key, out var seen))
        {
            if (seen.DType != dtype)
            {
                throw Error(position, $"storage '{key}' is read both as {seen.DType} and as {dtype}");
            }
            return seen;
        }
        var storage = new PickledStorage(dtype, key, location);
        _storages.Add(key, storage);
        return storage;
    }

    private long[] Longs(object?[] values, string what, int position)
    {
        var result = new long[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            result[i] = values[i] as long? ?? throw Error(position, $"tensor {what} holds {Describe(values[i])}, expected integers");
        }
        return result;
    }

    private List<object?> PopToMark(int position)
    {
        var mark = _stack.LastIndexOf(Mark);
        if (mark < 0)
        {
            throw Error(position, "no MARK on the stack");
        }
        var values = _stack.GetRange(mark + 1, _stack.Count - mark - 1);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return values;
    }

    private object? Pop(int position)
    {
        var value = Peek(position);
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object? Peek(int position)
    {
        if (_stack.Count == 0 || _stack[^1] == Mark)
        {
            throw Error(position, "stack underflow");
        }
        return _stack[^1];
    }

    private object? Get(long key, int position) =>
        _memo.TryGetValue(key, out var value) ? value : throw Error(position, $"memo key {key} was never stored");

    private List<object?> AsList(object? value, int position) =>
        value as List<object?> ?? throw Error(position, $"append to {Describe(value)}");

    private PickledDict AsDict(object? value, int position) =>
        value as PickledDict ?? throw Error(position, $"set an item of {Describe(value)}");

    private byte ReadByte() => Take(1)[0];

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || _at + count > _data.Length)
        {
            throw Error(_at, "the pickle ends in the middle of an opcode (truncated, or not a pickle)");
        }
        var span = _data.AsSpan(_at, count);
        _at += count;
        return span;
    }

    private int CheckedLength(ulong length, int position) =>
        length > (ulong)(_data.Length - _at) ? throw Error(position, $"a length of {length} bytes runs past the end of the pickle") : (int)length;

    private string ReadString(ulong length, int position)
    {
        try
        {
            return new UTF8Encoding(false, true).GetString(Take(CheckedLength(length, position)));
        }
        catch (DecoderFallbackException ex)
        {
            throw new PyTorchCheckpointException($"{_where}: offset {position}: a string is not valid UTF-8", ex);
        }
    }

    private string ReadLine(int position)
    {
        var end = Array.IndexOf(_data, (byte)'\n', _at);
        if (end < 0 || end - _at > 1024)
        {
            throw Error(position, "GLOBAL without a newline-terminated name");
        }
        var text = Encoding.ASCII.GetString(_data, _at, end - _at);
        _at = end + 1;
        return text;
    }

    private long ReadLong(int length, int position)
    {
        if (length > 8)
        {
            throw Error(position, $"an integer of {length} bytes does not fit in 64 bits");
        }
        var bytes = Take(length);
        long value = 0;
        for (var i = length - 1; i >= 0; i--)
        {
            value = (value << 8) | bytes[i];
        }
        if (length is > 0 and < 8 && (bytes[length - 1] & 0x80) != 0)
        {
            value -= 1L << (8 * length);
        }
        return value;
    }

    private static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"'{s}'",
        long l => l.ToString(CultureInfo.InvariantCulture),
        object?[] t => $"a tuple of {t.Length}",
        List<object?> => "a list",
        PickledDict => "a dict",
        PickledTensor => "a tensor",
        PickledStorage => "a storage",
        PickledGlobal g => $"the global '{g.Name}'",
        _ => value.GetType().Name,
    };

    private PyTorchCheckpointException Error(int position, string problem) =>
        new($"{_where}: offset {position}: {problem}");
}
