"""The identity module: organisations, practitioners, patients, keys and membership."""

from careledger.chain.modules.base import Message, Module
from careledger.chain.modules.identity import handler, messages, queries
from careledger.chain.modules.identity.enrolments import ENROLMENTS_SINCE
from careledger.chain.modules.identity.keeper import MODULE, IdentityKeeper
from careledger.chain.modules.identity.messages import rotation_payload
from careledger.chain.modules.identity.vouchers import (
    SELF_REGISTRATIONS,
    sign_consent,
    sign_voucher,
)

identity_module = Module(
    name=MODULE,
    messages={
        "register_patient": Message(messages.RegisterPatient.parse, handler.register_patient),
        "register_enrolled_patient": Message(
            messages.RegisterEnrolledPatient.parse,
            handler.register_enrolled_patient,
            since=ENROLMENTS_SINCE,
        ),
        "enrol_patients": Message(
            messages.EnrolPatients.parse, handler.enrol_patients, since=ENROLMENTS_SINCE
        ),
        "register_practitioner": Message(
            messages.RegisterPractitioner.parse, handler.register_practitioner
        ),
        "register_node": Message(messages.RegisterNode.parse, handler.register_node),
        "deregister_practitioner": Message(
            messages.DeregisterPractitioner.parse, handler.deregister_practitioner
        ),
        "rotate_key": Message(messages.RotateKey.parse, handler.rotate_key),
        "apply_membership": Message(messages.ApplyMembership.parse, handler.apply_membership),
        "approve_membership": Message(messages.ApproveMembership.parse, handler.approve_membership),
    },
    queries={
        "identity": queries.identity,
        "enrolment": queries.enrolment,
        "practitioners": queries.practitioners,
        "members": queries.members,
        "proposals": queries.proposals,
    },
    init_genesis=handler.init_genesis,
)

__all__ = [
    "MODULE",
    "SELF_REGISTRATIONS",
    "IdentityKeeper",
    "identity_module",
    "rotation_payload",
    "sign_consent",
    "sign_voucher",
]
